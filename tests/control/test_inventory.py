"""Choosing a device: selectors, kinds by engine, and one model per FPGA."""

from __future__ import annotations

import pytest

from gatewright.control.inventory import Inventory, InventoryDevice, NoDeviceError
from gatewright.control.spec import parse
from gatewright.devices.base import DeviceInfo


def device(
    uri: str, kind: str, runs: str = "bundle+onnx", max_models: int | None = None, **extra: object
) -> InventoryDevice:
    return InventoryDevice(DeviceInfo(uri, kind, kind, max_models, None, ("float32",), runs, extra=dict(extra)))


def remote(address: str, kind: str) -> InventoryDevice:
    info = DeviceInfo(
        f"remote://{address}/{kind}", "remote", "", None, None, ("float32",), "bundle", extra={"device": {"kind": kind}}
    )
    return InventoryDevice(info, address)


def spec(**fields: object):
    body = {"model": {"uri": "file:///m.onnx"}, **fields}
    return parse({"apiVersion": "gatewright/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": body}).spec


AVAILABLE = [
    device("cpu", "cpu"),
    device("emu", "emu"),
    device("sim", "sim", runs="bundle"),
    device("board:ulx3s", "board", max_models=1, target="ecp5-85k"),
    remote("h:9000", "sim"),
]


def choose(spec_, in_use=None, available=AVAILABLE) -> str:
    return Inventory.choose(Inventory.__new__(Inventory), spec_, in_use or {}, available).uri


def test_default_kinds_follow_the_engine_and_a_board_must_fit_the_target() -> None:
    assert choose(spec(engine="onnx")) == "cpu"
    assert choose(spec(target="ecp5-85k")) == "board:ulx3s"
    assert choose(spec(target="ecp5-25k")) == "sim"  # the board holds an ECP5-85K
    assert choose(spec(device={"kind": "emu"})) == "emu"
    assert choose(spec(device={"kind": "remote"})) == "remote://h:9000/sim"
    assert choose(spec(device={"uri": "remote://h:9000/sim"})) == "remote://h:9000/sim"


def test_one_model_per_fpga_unless_the_device_says_otherwise() -> None:
    assert choose(spec(target="ecp5-85k"), {"board:ulx3s": 1}) == "sim"  # the board is taken: the next kind
    with pytest.raises(NoDeviceError, match=r"busy: board:ulx3s; one model per FPGA"):
        choose(spec(target="ecp5-85k", device={"kind": "board"}), {"board:ulx3s": 1})
    assert choose(spec(device={"kind": "sim"}), {"sim": 50}) == "sim"  # no fixed limit


def test_a_device_that_is_not_there_is_named_with_the_inventory() -> None:
    with pytest.raises(NoDeviceError, match=r"device remote://x:1/sim is not in the inventory \(known: cpu, emu"):
        choose(spec(device={"uri": "remote://x:1/sim"}))
    with pytest.raises(NoDeviceError, match="no free device of kind cpu for engine onnx"):
        choose(spec(engine="onnx"), available=[device("sim", "sim", runs="bundle")])
