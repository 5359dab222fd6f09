"""The web UI end to end: a real control plane, a headless Chromium, a digits MLP uploaded, built for
the generic target, served on the RTL simulation and asked for a prediction through the page."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from tests import onnx_models as om
from tests.ui.conftest import ControlPlane

pytestmark = [pytest.mark.browser, pytest.mark.slow]

playwright = pytest.importorskip("playwright.sync_api")
expect = playwright.expect

BUILD_TIMEOUT_MS = 900_000  # the first build compiles a Verilator simulator


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The skl2onnx digits MLP and calibration data as files, one sample and onnxruntime's answer."""
    folder = tmp_path_factory.mktemp("digits")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, x, _ = om.sklearn_mlp(zipmap=False)
    (folder / "digits.onnx").write_bytes(model)
    np.save(folder / "calibration.npy", x[:200])
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    label, _probabilities = session.run(None, {name: x[:1]})
    return {
        "model": folder / "digits.onnx",
        "calibration": folder / "calibration.npy",
        "input": name,
        "sample": x[0].tolist(),
        "label": int(label[0]),
    }


def shot(page: Any, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def test_without_login_the_page_shows_the_login_form_and_no_data(
    page: Any, control_plane: ControlPlane, digits: dict[str, Any], artifacts: Path
) -> None:
    model = control_plane.upload(digits["model"])
    spec = {"model": {"uri": model}, "engine": "onnx", "device": {"kind": "cpu"}}
    document = {
        "apiVersion": "gatewright/v1",
        "kind": "Deployment",
        "metadata": {"name": "private-model"},
        "spec": spec,
    }
    status, body = control_plane.call("POST", "/api/v1/deployments", document)
    assert status == 201, body

    page.goto(control_plane.url)
    login = page.get_by_role("region", name="Log in")
    expect(login).to_be_visible()
    expect(login.get_by_label("Token")).to_be_visible()
    expect(page.get_by_role("heading", name="Deployments")).to_be_hidden()
    expect(page.get_by_role("heading", name="New deployment")).to_be_hidden()
    assert "private-model" not in page.content()
    assert page.request.get(f"{control_plane.url}/api/v1/deployments").status == 401  # the page holds no cookie
    shot(page, artifacts, "00-not-logged-in")

    assert control_plane.call("DELETE", "/api/v1/deployments/private-model")[0] == 202


def test_deploy_watch_the_build_predict_and_see_the_device(
    page: Any, control_plane: ControlPlane, digits: dict[str, Any], artifacts: Path
) -> None:
    page.goto(control_plane.url)

    # a wrong token is refused, the right one lets us in
    login = page.get_by_role("region", name="Log in")
    login.get_by_label("Token").fill("not-the-token")
    login.get_by_role("button", name="Log in").click()
    expect(login.get_by_role("alert")).to_contain_text("Wrong token")
    expect(page.get_by_role("heading", name="New deployment")).to_be_hidden()
    shot(page, artifacts, "01-wrong-token")
    login.get_by_label("Token").fill(control_plane.token)
    login.get_by_role("button", name="Log in").click()
    expect(login).to_be_hidden()
    form = page.get_by_role("region", name="New deployment")
    expect(form).to_be_visible()
    expect(form.get_by_label("Target").locator("option[value=generic]")).to_be_attached()
    shot(page, artifacts, "02-logged-in")

    # the new deployment: an uploaded model and calibration, fpga on the generic target, served on sim
    form.get_by_label("Name").fill("digits")
    form.get_by_label("Engine").select_option("fpga")
    form.get_by_label("Model file").set_input_files(digits["model"])
    form.get_by_label("Calibration file").set_input_files(digits["calibration"])
    form.get_by_label("Target").select_option("generic")
    form.get_by_label("Device kind").select_option("sim")
    shot(page, artifacts, "03-new-deployment")
    form.get_by_role("button", name="Deploy").click()
    expect(form.get_by_role("status")).to_contain_text("Applied digits", timeout=60_000)
    expect(form.get_by_role("alert", include_hidden=True)).to_have_text("")

    # the build log streams while the deployment builds
    deployments = page.get_by_role("table", name="Deployments")
    row = deployments.get_by_role("row").filter(has=page.get_by_role("cell", name="digits", exact=True))
    phase = row.locator('td[data-col="phase"]')
    log_panel = page.get_by_role("region", name="Build log")
    log = log_panel.get_by_role("log")
    expect(log).to_contain_text(re.compile(r"quantize\s+start"), timeout=120_000)
    seen_phase = phase.text_content()
    log_state = log_panel.get_by_role("status").text_content()
    assert seen_phase != "Ready", "the quantize step showed up only once the deployment was Ready"
    assert log_state == "live", f"the log stream is not live while the deployment is {seen_phase}: {log_state!r}"
    expect(log).to_contain_text(re.compile(r"quantize\s+done"), timeout=120_000)
    shot(page, artifacts, "04-building")

    # Ready: the endpoints are in the table and the log stream ended
    expect(phase).to_have_text("Ready", timeout=BUILD_TIMEOUT_MS)
    expect(log_panel.get_by_role("status")).to_have_text("finished: Ready", timeout=30_000)
    rest = row.locator('td[data-col="rest"]').get_by_role("link")
    expect(rest).to_have_attribute("href", f"{control_plane.rest}/v2/models/digits")
    expect(row.locator('td[data-col="grpc"]')).to_have_text(control_plane.grpc)
    expect(row.locator('td[data-col="device"]')).to_contain_text("sim")
    shot(page, artifacts, "05-ready")

    # a prediction with a real digits sample, through the page
    predict = page.get_by_role("region", name="Prediction")
    predict.get_by_label("Deployment", exact=True).select_option("digits")
    editor = predict.get_by_label("Request")
    expect(editor).to_have_value(re.compile(r'"inputs"'))
    json.loads(editor.input_value())  # the template is valid JSON
    request = {"inputs": [{"name": digits["input"], "shape": [1, 64], "datatype": "FP32", "data": digits["sample"]}]}
    editor.fill(json.dumps(request))
    predict.get_by_role("button", name="Send").click()
    expect(predict.get_by_label("Latency")).to_have_text(re.compile(r"^\d+(\.\d+)? ms$"), timeout=60_000)
    expect(predict.get_by_role("alert", include_hidden=True)).to_have_text("")
    outputs = predict.get_by_role("table", name="Outputs")
    expect(outputs.get_by_role("cell", name="label", exact=True)).to_be_visible()
    response = json.loads(predict.get_by_label("Response").text_content() or "null")
    label = next(o for o in response["outputs"] if o["name"] == "label")
    assert label["data"][0] == digits["label"], f"the FPGA simulation says {label}, onnxruntime {digits['label']}"
    shot(page, artifacts, "06-prediction")

    # the devices panel shows sim running the deployment; the jobs panel the finished build
    devices = page.get_by_role("table", name="Devices")
    sim = devices.get_by_role("row").filter(has=page.get_by_role("cell", name="sim", exact=True)).first
    expect(sim.locator('td[data-col="deployments"]')).to_contain_text("digits")
    jobs = page.get_by_role("table", name="Build jobs")
    expect(jobs.get_by_role("row").filter(has_text="digits").first).to_contain_text("succeeded")
    page.get_by_role("region", name="Devices").scroll_into_view_if_needed()
    shot(page, artifacts, "07-devices-and-jobs")

    # delete: the deployment leaves the table and the device
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Delete digits").click()
    expect(row).to_have_count(0, timeout=120_000)
    expect(sim.locator('td[data-col="deployments"]')).not_to_contain_text("digits")
    shot(page, artifacts, "08-deleted")

    # log out: the cookie is gone, the login form is back after a reload
    page.get_by_role("button", name="Log out").click()
    expect(login).to_be_visible()
    page.reload()
    expect(page.get_by_role("region", name="Log in")).to_be_visible()
    expect(page.get_by_role("heading", name="Deployments")).to_be_hidden()
