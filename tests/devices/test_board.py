"""The ``board`` device: its options and programming command, and, end to end, the same host driver
talking over a pseudo-terminal to the bundle's simulated board top level (gw_board in Verilator)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gatewright import devices
from gatewright.build.bundle import Bundle
from gatewright.build.pipeline import build
from gatewright.devices.board import BOARDS, BoardDevice, BoardModel, program_command
from gatewright.devices.emu import EmuDevice
from gatewright.errors import DeviceError, InferenceError, InputDataError
from gatewright.hw import framing
from gatewright.hw.bridge import PtyBridge, board_rtl, build_bridge
from tests import onnx_models as om

toolchain = [pytest.mark.toolchain, pytest.mark.slow]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two small bundles of different designs (RTL only: the simulated board needs no bitstream)."""
    work = tmp_path_factory.mktemp("bundles")
    paths = []
    for name, model in (
        ("a", om.pytorch_mlp([5, 6, 3], activation="leaky", softmax=True)),
        ("b", om.pytorch_mlp([4, 7, 2], seed=1)),
    ):
        (work / f"{name}.onnx").write_bytes(model)
        bundle, _ = build(work / f"{name}.onnx", work / f"{name}.bundle", until="rtl")
        paths.append(bundle.path)
    return paths[0], paths[1]


@pytest.fixture(scope="module")
def bridge_binary(bundles: tuple[Path, Path]) -> Path:
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler to build the Verilator model")
    return build_bridge(bundles[0])


@pytest.fixture
def bridge(bridge_binary: Path) -> Iterator[PtyBridge]:
    with PtyBridge(bridge_binary) as running:
        yield running


def _reference(bundle: Path, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    with EmuDevice("emu") as emu:
        return emu.load(bundle).infer(feeds)


def _batch(rows: int, n_in: int, seed: int = 0) -> np.ndarray:
    """Inputs across the input format's range and past it (saturation), with exact zeros."""
    x = np.random.default_rng(seed).normal(0.0, 8.0, (rows, n_in)).astype(np.float32)
    x[0] = 0.0
    x[1] = 1e4  # saturates high
    x[2] = -1e4  # saturates low
    return x


class Recorder:
    """The link's serial port, recording how many bytes had arrived when each frame went out."""

    def __init__(self, port: Any, before_first_write: Any = None) -> None:
        self._port = port
        self.received = 0
        self.writes: list[tuple[bytes, int]] = []
        self._before = before_first_write

    def read(self, size: int = 1) -> bytes:
        data: bytes = self._port.read(size)
        self.received += len(data)
        return data

    def write(self, data: bytes) -> int | None:
        if self._before is not None:
            self._before()
            self._before = None
        self.writes.append((bytes(data), self.received))
        result: int | None = self._port.write(data)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._port, name)


# ---------------------------------------------------------------------------------------------------------------
# options, info, discovery: no board needed


def test_uri_options_keywords_and_info(tmp_path: Path) -> None:
    port = tmp_path / "ttyFAKE"
    port.touch()
    dev = BoardDevice("board:ulx3s?port=/nowhere&program=always&baud=9600", port=str(port), program="never")
    info = dev.info()
    assert (info.kind, info.max_models, info.max_batch, info.runs) == ("board", 1, None, "bundle")
    assert info.dtypes == ("float32", "float64")
    assert info.extra["board"] == "ulx3s" and info.extra["port"] == str(port)
    assert info.extra["baud"] == 9600 and info.extra["program"] == "never"  # keywords win over the URI
    assert info.extra["openfpgaloader_board"] == "ulx3s" and info.extra["cable"] is None
    assert "ECP5" in info.description and str(port) in info.description
    # a board gatewright cannot program is fine when it is never programmed
    other = BoardDevice("board:my-own-board?port=socket://localhost:1&program=never&timeout=0.5&cable=ft2232")
    assert other.info().extra["openfpgaloader_board"] is None and other.timeout == 0.5 and other.cable == "ft2232"


@pytest.mark.parametrize(
    ("uri", "options", "message"),
    [
        ("board:ulx3s?port={p}&speed=9", {"flash": 1}, r"unknown option\(s\) flash, speed; a board takes port, baud"),
        ("board:ulx3s", {}, r"needs a serial port: add it to the URI \(board:ulx3s\?port=/dev/ttyUSB0\)"),
        ("board:ulx3s?port=/dev/no-such-tty", {}, "serial port /dev/no-such-tty does not exist; is the board plugged"),
        ("board:ulx3s?port={p}&program=sometimes", {}, "program=sometimes; choose one of auto, always, never"),
        ("board:ulx3s?port={p}&baud=fast", {}, "baud=fast is not a positive whole number"),
        ("board:ulx3s?port={p}&timeout=-1", {}, "timeout=-1 is not a positive number"),
        ("board:ulx3s?port={p}&port={p}", {}, "option 'port' given twice"),
        ("board:?port={p}", {}, "names no board; write board:NAME"),
    ],
)
def test_bad_uris_are_refused_with_the_fix(tmp_path: Path, uri: str, options: dict[str, Any], message: str) -> None:
    port = tmp_path / "ttyFAKE"
    port.touch()
    with pytest.raises(DeviceError, match=message):
        BoardDevice(uri.format(p=port), **options)


def test_discover_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWRIGHT_BOARDS", raising=False)
    assert BoardDevice.discover() == []
    monkeypatch.setenv("GATEWRIGHT_BOARDS", "board:ulx3s?port=/dev/ttyUSB0, board:icebreaker?port=/dev/ttyUSB1,")
    assert BoardDevice.discover() == ["board:ulx3s?port=/dev/ttyUSB0", "board:icebreaker?port=/dev/ttyUSB1"]


def test_plain_models_and_designless_bundles_are_refused(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(om.pytorch_mlp([3, 2]))
    quantized, _ = build(model, tmp_path / "q.bundle", until="quantize")
    port = tmp_path / "ttyFAKE"  # never opened: both are refused before the port is touched
    port.touch()
    with BoardDevice(f"board:ulx3s?port={port}") as dev:
        with pytest.raises(DeviceError, match=r"not plain models; build one first with `gatewright build"):
            dev.load(model)
        with pytest.raises(DeviceError, match=r"no hardware design \(built --until quantize\?\)"):
            dev.load(quantized.path)


def test_registered_as_the_board_backend(tmp_path: Path) -> None:
    if "board" not in devices.backends():
        pytest.skip("the 'board' entry point is not installed in this environment (pip install -e .)")
    port = tmp_path / "ttyFAKE"
    port.touch()
    assert devices.backends()["board"] is BoardDevice
    with devices.open(f"board:icebreaker?port={port}", program="never") as dev:
        assert isinstance(dev, BoardDevice) and dev.info().extra["openfpgaloader_board"] == "ice40_generic"


# ---------------------------------------------------------------------------------------------------------------
# programming: a fake openFPGALoader on PATH


def _fake_loader(bin_dir: Path, exit_code: int, output: str) -> Path:
    """An ``openFPGALoader`` that writes its arguments, one per line, to $FAKE_LOADER_ARGV."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "openFPGALoader"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "$FAKE_LOADER_ARGV"\necho "{output}"\nexit {exit_code}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def _with_bitstream(
    source: Path, dest: Path, target: str = "ecp5-25k", suffix: str = ".bit", clock_mhz: float = 25.0
) -> Path:
    """A copy of a bundle that claims a bitstream for ``target``: a dummy file, enough to test the invocation."""
    shutil.copytree(source, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["target"] = target
    manifest["architecture"]["clock_mhz"] = clock_mhz
    manifest["architecture"]["bitstream"] = f"firmware{suffix}"
    (dest / "manifest.json").write_text(json.dumps(manifest))
    (dest / f"firmware{suffix}").write_bytes(b"\xff\x00not a real bitstream")
    return dest


def test_programming_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bundles: tuple[Path, Path]) -> None:
    """Only the invocation is tested here: a fake openFPGALoader records its arguments. No bitstream is
    built and no board is programmed; the pseudo-terminal used as the port has nobody answering."""
    loader = _fake_loader(tmp_path / "bin", 0, "Done")
    argv_file = tmp_path / "argv"
    monkeypatch.setenv("PATH", f"{loader.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOADER_ARGV", str(argv_file))
    ecp5 = Bundle(_with_bitstream(bundles[0], tmp_path / "ecp5.bundle"))
    ice40 = Bundle(_with_bitstream(bundles[0], tmp_path / "ice40.bundle", "ice40-up5k", ".bin", 12.0))
    unbuilt = _with_bitstream(bundles[0], tmp_path / "unbuilt.bundle")
    (unbuilt / "firmware.bit").unlink()

    bit = str(ecp5.path / "firmware.bit")
    assert program_command("ulx3s", BOARDS["ulx3s"], ecp5) == [str(loader), "-b", "ulx3s", bit]
    assert program_command("ulx3s", BOARDS["ulx3s"], ecp5, cable="ft231X")[1:] == [
        "-b",
        "ulx3s",
        "--cable",
        "ft231X",
        bit,
    ]
    assert program_command("icebreaker", BOARDS["icebreaker"], ice40)[1:] == [
        "-b",
        "ice40_generic",
        str(ice40.path / "firmware.bin"),
    ]
    with pytest.raises(
        DeviceError, match=r"built for ecp5-25k, board 'icebreaker' carries an iCE40 UP5K.*--target ice40-up5k"
    ):
        program_command("icebreaker", BOARDS["icebreaker"], ecp5)
    with pytest.raises(DeviceError, match=r"built for a 25 MHz clock, board 'orangecrab' clocks .* --clock-mhz 48"):
        program_command("orangecrab", BOARDS["orangecrab"], ecp5)
    with pytest.raises(DeviceError, match=r"unknown board 'mystery'.*use program=never"):
        program_command("mystery", None, ecp5)
    with pytest.raises(DeviceError, match=r"no bitstream to program; build it with `--until bitstream`"):
        program_command("ulx3s", BOARDS["ulx3s"], Bundle(unbuilt))

    # the device runs it, then asks the board (here: nobody) for IDENT
    master, slave = os.openpty()
    try:
        uri = f"board:ulx3s?port={os.ttyname(slave)}&program=always&cable=ft231X&timeout=0.1"
        with (
            BoardDevice(uri) as dev,
            pytest.raises(DeviceError, match=r"just programmed with .*firmware.bit.*no answer to IDENT"),
        ):
            dev.load(ecp5)
        assert argv_file.read_text().splitlines() == ["-b", "ulx3s", "--cable", "ft231X", bit]
        assert dev.models == []
    finally:
        os.close(master)
        os.close(slave)


def test_programming_failures_say_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bundles: tuple[Path, Path]
) -> None:
    """A failing (fake) openFPGALoader and a missing one; the invocation only, no board."""
    ecp5 = Bundle(_with_bitstream(bundles[0], tmp_path / "ecp5.bundle"))
    port = tmp_path / "ttyFAKE"
    port.touch()
    loader = _fake_loader(tmp_path / "bin", 1, "JTAG init failed: no device found")
    monkeypatch.setenv("FAKE_LOADER_ARGV", str(tmp_path / "argv"))
    monkeypatch.setenv("PATH", f"{loader.parent}{os.pathsep}{os.environ['PATH']}")
    failing = r"(?s)programming board 'ulx3s' failed.*exit code 1.*no device found"
    with BoardDevice(f"board:ulx3s?port={port}&program=always") as dev, pytest.raises(DeviceError, match=failing):
        dev.load(ecp5)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with (
        BoardDevice(f"board:ulx3s?port={port}&program=always") as dev,
        pytest.raises(
            DeviceError, match=r"openFPGALoader is not on PATH: install it \(`apt-get install openfpgaloader`"
        ),
    ):
        dev.load(ecp5)


# ---------------------------------------------------------------------------------------------------------------
# end to end: the host driver against the simulated board top level


@pytest.mark.toolchain
@pytest.mark.slow
def test_bridge_simulates_the_bitstream_top_level(bundles: tuple[Path, Path], bridge: PtyBridge) -> None:
    manifest = json.loads((bundles[0] / "manifest.json").read_text())["architecture"]
    rtl = board_rtl(bundles[0])
    assert rtl.parameters["DESIGN_ID"] == f"32'h{manifest['design_id']}"  # as gw_top gives it to gw_board
    assert rtl.parameters["CLKS_PER_BIT"] == "4" and rtl.sources[-1] == "gw_uart.v"
    assert board_rtl(bundles[0], None).parameters["CLKS_PER_BIT"] == str(round(100e6 / 115200))
    assert bridge.running and bridge.port.startswith("/dev/")


@pytest.mark.toolchain
@pytest.mark.slow
def test_board_infers_bit_exact_like_the_emulator(bundles: tuple[Path, Path], bridge: PtyBridge) -> None:
    with BoardDevice(f"board:sim?port={bridge.port}&program=never") as dev:
        model = dev.load(bundles[0])
        assert isinstance(model, BoardModel) and model.info().source == "bundle"
        x = _batch(40, 5)
        recorder = Recorder(model.link.serial)
        model.link.serial = recorder
        got = model.infer({"input": x})
        want = _reference(bundles[0], {"input": x})
        assert list(got) == list(want) == ["output"]
        assert len(np.unique(got["output"])) > 40  # not a constant answer that would match by chance
        for name in want:
            assert got[name].dtype == want[name].dtype
            np.testing.assert_array_equal(got[name], want[name])
        # flow control: request k+1 left only after the first byte of response k had arrived
        response = framing.infer_response_size(3, model.link.expected.out_bits)
        assert len(recorder.writes) == 40
        assert recorder.writes[0][1] == 0
        for k, (frame, received) in enumerate(recorder.writes[1:], start=1):
            assert frame[:2] == b"\xa5\x02"
            assert received >= (k - 1) * response + 1, f"request {k} went out before response {k - 1} began"
        single = model.infer({"input": x[3:4]})
        np.testing.assert_array_equal(single["output"], want["output"][3:4])

        result = model.selftest()
        assert result.passed and result.vectors == 64, str(result)
        stats = dev.xstats()
        assert stats[f"model.{model.id}.count"] == 3 and stats[f"model.{model.id}.errors"] == 0
        assert stats[f"model.{model.id}.samples"] == 40 + 1 + 64 and stats["device.models"] == 1
        assert dev.stats() == {"enqueued": 3, "dequeued": 3, "errors": 0}

        with pytest.raises(InputDataError, match="NaN"):
            model.infer({"input": np.full((2, 5), np.nan, dtype=np.float32)})
        with pytest.raises(DeviceError, match="cannot be changed in place; rebuild the bundle"):
            model.update_params(bundles[0] / "model.onnx")
        with pytest.raises(DeviceError, match=r"holds 1 model\(s\) already"):
            dev.load(bundles[0])
        # unload and load again: the port is closed and reopened, the bridge keeps running
        dev.unload(model)
        again = dev.load(bundles[0])
        np.testing.assert_array_equal(again.infer({"input": x})["output"], want["output"])


@pytest.mark.toolchain
@pytest.mark.slow
def test_a_bundle_of_another_design_is_refused(bundles: tuple[Path, Path], bridge: PtyBridge) -> None:
    with BoardDevice(f"board:sim?port={bridge.port}&program=never") as dev:
        with pytest.raises(
            DeviceError, match=r"does not match the bundle: design_id \d+ \(expected \d+\), n_in 5 \(expected 4\)"
        ):
            dev.load(bundles[1])
        assert dev.models == []
        x = _batch(5, 5, seed=1)
        np.testing.assert_array_equal(
            dev.load(bundles[0]).infer({"input": x})["output"], _reference(bundles[0], {"input": x})["output"]
        )


@pytest.mark.toolchain
@pytest.mark.slow
def test_program_auto_programs_only_a_board_that_runs_something_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bundles: tuple[Path, Path], bridge: PtyBridge
) -> None:
    """The decision, with a fake openFPGALoader: the simulated board runs bundle a whatever is 'programmed'."""
    loader = _fake_loader(tmp_path / "bin", 0, "Done")
    argv_file = tmp_path / "argv"
    monkeypatch.setenv("PATH", f"{loader.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOADER_ARGV", str(argv_file))
    same = _with_bitstream(bundles[0], tmp_path / "a.bundle")
    other = _with_bitstream(bundles[1], tmp_path / "b.bundle")
    with BoardDevice(f"board:colorlight-i5?port={bridge.port}") as dev:  # program=auto is the default
        dev.unload(dev.load(same))
        assert not argv_file.exists()  # it answered IDENT with this design: not programmed
        with pytest.raises(DeviceError, match=r"just programmed with .*b.bundle/firmware.bit.*design_id"):
            dev.load(other)
        assert argv_file.read_text().splitlines() == ["-b", "colorlight-i5", str(other / "firmware.bit")]


@pytest.mark.toolchain
@pytest.mark.slow
def test_garbage_on_the_line_does_not_break_the_next_inference(bundles: tuple[Path, Path], bridge: PtyBridge) -> None:
    x = _batch(12, 5, seed=2)
    want = _reference(bundles[0], {"input": x})["output"]
    with BoardDevice(f"board:sim?port={bridge.port}&program=never") as dev:
        model = dev.load(bundles[0])
        assert isinstance(model, BoardModel)
        port = model.link.serial

        # host -> board: bytes without a request sync are ignored by the idle board
        port.write(b"\x00\x13\x37\xff\x5a\x02")
        np.testing.assert_array_equal(model.infer({"input": x})["output"], want)

        # host -> board: an unknown command is answered with an error the host did not ask for
        port.write(b"\xa5\x7e")
        deadline = time.monotonic() + 10
        while port.in_waiting < framing.ERROR_RESPONSE_SIZE and time.monotonic() < deadline:
            time.sleep(0.01)
        assert port.in_waiting == framing.ERROR_RESPONSE_SIZE
        np.testing.assert_array_equal(model.infer({"input": x})["output"], want)

        def noise(data: bytes) -> Any:
            def inject() -> None:  # lands before the first answer: the board answers only after this write
                bridge.send_to_host(data)
                end = time.monotonic() + 10
                while port.in_waiting < len(data) and time.monotonic() < end:
                    time.sleep(0.005)

            return inject

        # board -> host: noise without a response sync is skipped by the decoder
        model.link.serial = Recorder(port, noise(b"\x00\x11\xa5\x22"))
        np.testing.assert_array_equal(model.infer({"input": x})["output"], want)

        # board -> host: a malformed response fails this request and resynchronizes the link
        model.link.serial = Recorder(port, noise(b"\x5a\x33\x00"))
        with pytest.raises(InferenceError, match=r"unknown command byte 0x33.*the link is resynchronized") as failed:
            model.infer({"input": x})
        assert failed.value.status == "internal"
        model.link.serial = port
        np.testing.assert_array_equal(model.infer({"input": x})["output"], want)
        stats = dev.xstats()
        assert stats[f"model.{model.id}.count"] == 4 and stats[f"model.{model.id}.errors"] == 1


@pytest.mark.toolchain
@pytest.mark.slow
def test_a_stalled_board_times_out_and_the_link_recovers(bundles: tuple[Path, Path], bridge: PtyBridge) -> None:
    x = _batch(6, 5, seed=3)
    want = _reference(bundles[0], {"input": x})["output"]
    with BoardDevice(f"board:sim?port={bridge.port}&program=never&timeout=0.3") as dev:
        model = dev.load(bundles[0])
        os.kill(bridge.process.pid, signal.SIGSTOP)  # the board stops answering
        try:
            with pytest.raises(
                InferenceError,
                match=r"no answer from the board .*\(0 of 6 responses received\).*resynchronizing failed too",
            ) as failed:
                model.infer({"input": x})
            assert failed.value.status == "unavailable"
            with pytest.raises(
                InferenceError, match="out of step and cannot be recovered: no answer to IDENT"
            ) as again:
                model.infer({"input": x})
            assert again.value.status == "unavailable"
        finally:
            os.kill(bridge.process.pid, signal.SIGCONT)
        # the board now answers the requests it had queued; the host lets those answers go by
        np.testing.assert_array_equal(model.infer({"input": x})["output"], want)
        assert dev.stats() == {"enqueued": 3, "dequeued": 3, "errors": 2}


@pytest.mark.toolchain
@pytest.mark.slow
def test_a_board_behind_the_agent_answers_like_the_local_board(
    tmp_path: Path, bundles: tuple[Path, Path], bridge: PtyBridge
) -> None:
    from gatewright.agent.server import serve

    uri = f"board:sim?port={bridge.port}&program=never"
    x = _batch(12, 5, seed=3)
    with BoardDevice(uri) as local:
        want = local.load(bundles[0]).infer({"input": x})  # then the port is free for the agent
    server, service, port = serve("127.0.0.1:0", [uri], ["t0ken"], tmp_path / "store")
    try:
        with devices.open(f"remote://127.0.0.1:{port}/{uri}", token="t0ken") as remote:
            assert remote.info().max_models == 1 and remote.info().extra["device"]["kind"] == "board"
            model = remote.load(bundles[0])
            got = model.infer({"input": x})
            assert list(got) == list(want)
            for name in want:
                assert got[name].dtype == want[name].dtype
                np.testing.assert_array_equal(got[name], want[name])
            assert model.selftest().passed
    finally:
        server.stop(grace=None)
        service.close()
