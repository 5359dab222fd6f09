"""The agent and the remote device: same results as local devices, tokens, TLS, uploads by content,
sessions that end with their client, an agent killed mid-stream and restarted."""

from __future__ import annotations

import datetime
import io
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from gatewright import devices
from gatewright.agent import agent_pb2 as pb
from gatewright.agent import agent_pb2_grpc as pb_grpc
from gatewright.agent.server import AgentService, serve
from gatewright.build.pipeline import build
from gatewright.errors import DeviceError, InferenceError, InputDataError
from tests import onnx_models as om

TOKEN = "test-token-" + "x" * 20


@pytest.fixture(scope="module")
def digits_bundle(tmp_path_factory: pytest.TempPathFactory, sklearn_digits: dict) -> tuple[Path, Path, np.ndarray]:
    """A ZipMap classifier (a sequence-of-maps output travels too), its bundle, and test inputs."""
    work = tmp_path_factory.mktemp("agent-model")
    model, x, _ = sklearn_digits[True]
    (work / "digits.onnx").write_bytes(model)
    np.save(work / "calib.npy", x[:300])
    build(work / "digits.onnx", work / "digits.bundle", until="quantize", calibration=work / "calib.npy")
    return work / "digits.onnx", work / "digits.bundle", np.asarray(x[1500:1540])


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[str, AgentService]]:
    server, service, port = serve("127.0.0.1:0", ["emu", "cpu", "noop"], [TOKEN], tmp_path / "store", lease_s=30)
    yield f"127.0.0.1:{port}", service
    server.stop(grace=None)
    service.close()


def same(a: Any, b: Any) -> None:
    """Bit-for-bit equal outputs: arrays by dtype, shape and value; sequences of maps entry by entry."""
    assert list(a) == list(b)
    for name in a:
        if isinstance(a[name], list):
            assert a[name] == b[name] and type(a[name][0]) is type(b[name][0])
        else:
            assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape
            np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize("kind", ["emu", "cpu", "noop"])
def test_results_through_the_agent_equal_local_results(
    agent: tuple[str, AgentService], digits_bundle: tuple[Path, Path, np.ndarray], kind: str
) -> None:
    address, _ = agent
    onnx_path, bundle_dir, x = digits_bundle
    with devices.open(kind) as local, devices.open(f"remote://{address}/{kind}", token=TOKEN) as remote:
        for source in (bundle_dir, onnx_path) if kind != "emu" else (bundle_dir,):
            want = local.load(source).infer({"X": x})
            model = remote.load(source)
            same(model.infer({"X": x}), want)
            same(model.submit({"X": x}).result(timeout=60), want)
            streamed = list(model.infer_stream([{"X": x[:5]}, {"X": x[5:]}]))
            assert [op.status for op in streamed] == ["ok", "ok"]
            want_head = local.load(source).infer({"X": x[:5]})
            same(streamed[0].outputs, want_head)
        info = remote.info()
        assert info.kind == "remote" and info.extra["device"]["kind"] == kind and info.uri.endswith(f"/{kind}")


def test_remote_api_matches_local(
    agent: tuple[str, AgentService], digits_bundle: tuple[Path, Path, np.ndarray], tmp_path: Path
) -> None:
    address, _ = agent
    _, bundle_dir, x = digits_bundle
    with devices.open("emu") as emu, devices.open(f"remote://{address}/emu", token=TOKEN) as remote:
        local, model = emu.load(bundle_dir), remote.load(bundle_dir)
        assert model.info().inputs == local.info().inputs and model.info().outputs == local.info().outputs
        np.testing.assert_array_equal(model.quantize("X", x), local.quantize("X", x))
        raw = local.quantize("X", x)
        np.testing.assert_array_equal(model.dequantize("X", raw), local.dequantize("X", raw))
        result = model.selftest()
        assert result.passed and result.vectors == local.selftest().vectors
        # bursts on a queue pair, one of them bad: it fails alone, in order
        ops = [devices.Op(model, {"X": x[i : i + 2]}, user_data=i) for i in range(10)]
        ops[4] = devices.Op(model, {"X": x[:2, :3]}, user_data=4)
        assert remote.queue_pair(2).enqueue_burst(ops) == 10
        done: list[devices.Op] = []
        while len(done) < 10:
            done += remote.queue_pair(2).dequeue_burst(10, timeout=60)
        assert [op.user_data for op in done] == list(range(10))
        assert done[4].status == "invalid_argument" and "shape [2, 3]" in str(done[4].error)
        same(done[7].outputs, local.infer({"X": x[7:9]}))
        with pytest.raises(InputDataError, match=r"input 'X' has shape \[2, 3\]"):
            model.infer({"X": x[:2, :3]})
        stats = remote.xstats()
        # client side: 9 answered, 2 refused (checked before they leave the client)
        assert stats[f"model.{model.id}.count"] == 9 and stats[f"model.{model.id}.errors"] == 2
        assert stats[f"agent.model.{model.id}.count"] == 9 + 1  # on the agent: the self-test ran there too
        assert stats[f"agent.model.{model.id}.errors"] == 0
        assert remote.stats()["errors"] == 2
        # a stream with a bad request in the middle goes on
        streamed = list(model.infer_stream([{"X": x[:1]}, {"X": x[:1, :2]}, {"X": x[1:2]}]))
        assert [op.status for op in streamed] == ["ok", "invalid_argument", "ok"]
        # retrained weights of the same structure are taken in place on emu, as locally
        retrained, _, _ = om.sklearn_mlp(True, hidden=(16,), seed=5)
        (tmp_path / "r.onnx").write_bytes(retrained)
        before = model.infer({"X": x})
        model.update_params(tmp_path / "r.onnx")
        local.update_params(tmp_path / "r.onnx")
        after = model.infer({"X": x})
        same(after, local.infer({"X": x}))
        assert after["output_probability"] != before["output_probability"]  # the new weights answer
        other, _, _ = om.sklearn_mlp(True, hidden=(8,), seed=5)
        (tmp_path / "o.onnx").write_bytes(other)
        with pytest.raises(DeviceError, match="cannot take the new weights"):
            model.update_params(tmp_path / "o.onnx")
        same(model.infer({"X": x}), after)
        remote.unload(model)
        with pytest.raises(DeviceError, match="not loaded"):
            remote.unload(model)


def test_tokens_are_required_and_checked(agent: tuple[str, AgentService], monkeypatch: pytest.MonkeyPatch) -> None:
    address, _ = agent
    monkeypatch.delenv("GATEWRIGHT_TOKEN", raising=False)
    with pytest.raises(DeviceError, match="needs a token"):
        devices.open(f"remote://{address}/emu")
    with pytest.raises(DeviceError, match=r"refused the token.*invalid bearer token"):
        devices.open(f"remote://{address}/emu", token="wrong")
    monkeypatch.setenv("GATEWRIGHT_TOKEN", TOKEN)
    with devices.open(f"remote://{address}/emu") as remote:  # the variable is enough
        assert remote.info().kind == "remote"
    # the server itself refuses calls without the header, on every method kind
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.AgentStub(channel)
        with pytest.raises(grpc.RpcError) as denied:
            stub.ListDevices(pb.ListDevicesRequest(), timeout=10)
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as denied:
            list(stub.InferStream(iter([pb.InferRequest()]), timeout=10))
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_unknown_device_and_bad_uri(agent: tuple[str, AgentService]) -> None:
    address, _ = agent
    with pytest.raises(DeviceError, match="serves no device 'sim'; it serves emu, cpu, noop"):
        devices.open(f"remote://{address}/sim", token=TOKEN)
    with pytest.raises(DeviceError, match="not a remote device URI"):
        devices.open("remote://nohost/emu", token=TOKEN)
    with pytest.raises(DeviceError, match="unreachable"):
        devices.open("remote://127.0.0.1:1/emu", token=TOKEN, timeout_s=3)


def test_uploads_are_deduplicated_by_content(
    agent: tuple[str, AgentService], digits_bundle: tuple[Path, Path, np.ndarray]
) -> None:
    address, service = agent
    _, bundle_dir, _ = digits_bundle
    with (
        devices.open(f"remote://{address}/emu", token=TOKEN) as a,
        devices.open(f"remote://{address}/cpu", token=TOKEN) as b,
    ):
        a.load(bundle_dir)
        stored = sorted(p.name for p in (service.store / "blobs").iterdir())
        b.load(bundle_dir)
        a.load(bundle_dir)
        assert sorted(p.name for p in (service.store / "blobs").iterdir()) == stored and len(stored) == 1
        assert service.loaded_models() == 3


def _upload(stub: pb_grpc.AgentStub, data: bytes, sha: str, kind: str = "bundle") -> None:
    stub.Upload(
        iter([pb.UploadChunk(sha256=sha, kind=kind, size=len(data), data=data)]),
        timeout=10,
        metadata=(("authorization", f"Bearer {TOKEN}"),),
    )


def test_damaged_and_unsafe_uploads_are_refused(agent: tuple[str, AgentService], tmp_path: Path) -> None:
    import hashlib

    address, service = agent
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("manifest.json", "../escaped.txt"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
    evil = buffer.getvalue()
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.AgentStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            _upload(stub, evil, hashlib.sha256(evil).hexdigest())
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "unsafe" in refused.value.details()
        with pytest.raises(grpc.RpcError) as refused:
            _upload(stub, b"abc", "0" * 64)
        assert (
            refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            and "does not match its digest" in refused.value.details()
        )
    assert not (service.store / "escaped.txt").exists() and not (service.store.parent / "escaped.txt").exists()
    assert [p for p in (service.store / "blobs").iterdir() if not p.name.startswith(".")] == []


def test_several_clients_at_once(agent: tuple[str, AgentService], digits_bundle: tuple[Path, Path, np.ndarray]) -> None:
    address, _ = agent
    _, bundle_dir, x = digits_bundle
    with devices.open("emu") as emu:
        want = emu.load(bundle_dir).infer({"X": x})
    failures: list[BaseException] = []

    def client() -> None:
        try:
            with devices.open(f"remote://{address}/emu", token=TOKEN) as remote:
                model = remote.load(bundle_dir)
                for _ in range(15):
                    same(model.infer({"X": x}), want)
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not failures, failures


def test_a_client_that_disappears_leaves_no_models(
    tmp_path: Path, digits_bundle: tuple[Path, Path, np.ndarray]
) -> None:
    server, service, port = serve("127.0.0.1:0", ["emu"], [TOKEN], tmp_path / "store", lease_s=30)
    try:
        _, bundle_dir, _ = digits_bundle
        script = (
            "import os, sys\n"
            "from gatewright import devices\n"
            f"d = devices.open('remote://127.0.0.1:{port}/emu', token={TOKEN!r}, lease_s=1.5)\n"
            f"d.load({str(bundle_dir)!r}); d.load({str(bundle_dir)!r})\n"
            "print('loaded', flush=True)\n"
            "os.kill(os.getpid(), 9)\n"  # gone without closing anything
        )
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert "loaded" in run.stdout, run.stderr
        assert run.returncode == -signal.SIGKILL
        assert service.loaded_models() == 2
        deadline = time.monotonic() + 10
        while service.loaded_models() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert service.loaded_models() == 0 and not service.sessions
    finally:
        server.stop(grace=None)
        service.close()


def _start_agent(tmp_path: Path, listen: str, extra: list[str] | None = None) -> tuple[subprocess.Popen[str], int]:
    token_file = tmp_path / "tokens"
    token_file.write_text(f"# agent tokens\n{TOKEN}\n")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gatewright.cli",
            "agent",
            "--listen",
            listen,
            "--devices",
            "emu,cpu",
            "--token-file",
            str(token_file),
            "--store",
            str(tmp_path / "store"),
            *(extra or []),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"agent listening on [\w.]+:(\d+)", line)
    assert match, line + (process.stdout.read() if process.poll() is not None else "")
    return process, int(match.group(1))


def test_agent_killed_mid_stream_then_restarted(tmp_path: Path, digits_bundle: tuple[Path, Path, np.ndarray]) -> None:
    _, bundle_dir, x = digits_bundle
    process, port = _start_agent(tmp_path, "127.0.0.1:0")
    try:
        with devices.open(f"remote://127.0.0.1:{port}/emu", token=TOKEN) as remote:
            model = remote.load(bundle_dir)
            want = model.infer({"X": x})

            def batches() -> Iterator[dict[str, np.ndarray]]:
                for i in range(1000):
                    if i == 5:
                        process.kill()  # the agent dies with the stream open
                        process.wait()
                    time.sleep(0.02)
                    yield {"X": x}

            received = []
            with pytest.raises(InferenceError, match="unreachable or went away") as lost:
                for op in model.infer_stream(batches()):
                    received.append(op)
            assert lost.value.status == "unavailable"
            assert 1 <= len(received) < 1000 and all(op.status == "ok" for op in received)
            with pytest.raises(InferenceError, match="unreachable") as down:
                model.infer({"X": x})
            assert down.value.status == "unavailable"

            process, _ = _start_agent(tmp_path, f"127.0.0.1:{port}")  # same port, same store
            deadline = time.monotonic() + 20
            while True:  # the channel reconnects within its backoff (a second at most)
                try:
                    got = model.infer({"X": x})
                    break
                except InferenceError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            same(got, want)  # a new session, the model loaded again, same answers
    finally:
        process.kill()
        process.wait()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "agent.crt", tmp_path / "agent.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_tls(tmp_path: Path, digits_bundle: tuple[Path, Path, np.ndarray]) -> None:
    _, bundle_dir, x = digits_bundle
    cert, key = _self_signed(tmp_path)
    server, service, port = serve("localhost:0", ["emu"], [TOKEN], tmp_path / "store", tls_cert=cert, tls_key=key)
    try:
        with (
            devices.open(f"remote://localhost:{port}/emu", token=TOKEN, tls_ca=cert) as remote,
            devices.open("emu") as emu,
        ):
            same(remote.load(bundle_dir).infer({"X": x}), emu.load(bundle_dir).infer({"X": x}))
        with pytest.raises(DeviceError, match="unreachable"):  # plaintext to a TLS port
            devices.open(f"remote://localhost:{port}/emu", token=TOKEN, timeout_s=3)
    finally:
        server.stop(grace=None)
        service.close()


@pytest.mark.toolchain
@pytest.mark.slow
def test_sim_through_the_agent_equals_local_sim(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(om.pytorch_mlp([5, 7, 3], seed=6))
    build(tmp_path / "m.onnx", tmp_path / "m.bundle", until="sim")
    x = om.rng(6).normal(size=(64, 5)).astype(np.float32)
    server, service, port = serve("127.0.0.1:0", ["sim"], [TOKEN], tmp_path / "store")
    try:
        with devices.open("sim") as sim, devices.open(f"remote://127.0.0.1:{port}/sim", token=TOKEN) as remote:
            local, model = sim.load(tmp_path / "m.bundle"), remote.load(tmp_path / "m.bundle")
            same(model.infer({"input": x}), local.infer({"input": x}))
            assert model.selftest().passed
            stats = remote.xstats()
            assert stats[f"agent.model.{model.id}.cycles_last"] == local.last_cycles
            with pytest.raises(DeviceError, match="rebuild"):
                model.update_params(tmp_path / "m.onnx")
    finally:
        server.stop(grace=None)
        service.close()


def test_devices_list_includes_the_agents_devices(
    agent: tuple[str, AgentService], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, _ = agent
    monkeypatch.setenv("GATEWRIGHT_AGENTS", address)
    monkeypatch.setenv("GATEWRIGHT_TOKEN", TOKEN)
    remote = {info.uri: info for info in devices.list() if info.kind == "remote"}
    assert set(remote) == {f"remote://{address}/{kind}" for kind in ("emu", "cpu", "noop")}
    assert remote[f"remote://{address}/cpu"].runs == "bundle+onnx"


def test_agent_cli_needs_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GATEWRIGHT_TOKEN"}
    run = subprocess.run(
        [sys.executable, "-m", "gatewright.cli", "agent", "--listen", "127.0.0.1:0", "--devices", "emu"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2 and "needs a token" in run.stderr and "Traceback" not in run.stderr
    (tmp_path / "tokens").write_text("# nothing here\n\n")
    run = subprocess.run(
        [sys.executable, "-m", "gatewright.cli", "agent", "--token-file", str(tmp_path / "tokens")],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2 and "holds no token" in run.stderr
    for bad, message in (
        (["--devices", "emu,nosuch"], "unknown device 'nosuch'"),
        (["--tls-cert", str(tmp_path / "no.crt"), "--tls-key", str(tmp_path / "no.key")], "cannot read the TLS"),
    ):
        run = subprocess.run(
            [sys.executable, "-m", "gatewright.cli", "agent", "--listen", "127.0.0.1:0", *bad],
            capture_output=True, text=True, env={**env, "GATEWRIGHT_TOKEN": "t"}, timeout=60,
        )  # fmt: skip
        assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_concurrent_uploads_of_one_blob_all_succeed(
    agent: tuple[str, AgentService], digits_bundle: tuple[Path, Path, np.ndarray]
) -> None:
    """Clients that all found the blob missing upload it at once: one stores it, every upload succeeds."""
    import hashlib

    from gatewright.build import bundle as bundles

    address, service = agent
    data = bundles.pack(digits_bundle[1])
    sha = hashlib.sha256(data).hexdigest()
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def upload() -> None:
        with grpc.insecure_channel(address) as channel:
            start.wait()
            try:
                _upload(pb_grpc.AgentStub(channel), data, sha)
            except grpc.RpcError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=upload) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, [e.details() for e in errors]  # type: ignore[attr-defined]
    assert [p.name for p in (service.store / "blobs").iterdir() if not p.name.startswith(".")] == [sha]
    assert bundles.pack(service.store / "blobs" / sha) == data  # stored whole, byte for byte
