"""The generated core inside the UART board wrapper, as a bitstream carries it: simulated bit by
bit on the serial line, driven through the host framing codec, against the golden vectors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gatewright.build.pipeline import build
from gatewright.hw import framing
from gatewright.hw.framing import FrameDecoder, IdentResponse, InferResponse, encode_ident, encode_infer
from gatewright.toolchain.verilator import build_simulator
from tests import onnx_models as om
from tests.hw.test_board_wrapper import Board

pytestmark = [pytest.mark.toolchain, pytest.mark.slow]
CLKS_PER_BIT = 4  # a fast line: the protocol does not depend on the baud rate


def test_generated_core_behind_the_uart_matches_the_golden_vectors(tmp_path: Path) -> None:
    model_path = tmp_path / "m.onnx"
    model_path.write_bytes(om.pytorch_mlp([5, 6, 3], activation="leaky"))
    bundle, _ = build(model_path, tmp_path / "m.bundle", until="rtl", use_cache=False)
    architecture = bundle.manifest["architecture"]
    n_in, in_bits, n_out, out_bits = (architecture[k] for k in ("n_in", "in_bits", "n_out", "out_bits"))
    design_id = int(architecture["design_id"], 16)
    rtl = bundle.path / "rtl"
    work = tmp_path / "board"
    work.mkdir()
    sources = [*json.loads((rtl / "design.json").read_text())["sources"], "gw_uart.v"]
    for name in sources:
        shutil.copy(rtl / name, work / name)
    shutil.copy(Path(framing.__file__).parent / "rtl" / "uart_bridge.cpp", work / "uart_bridge.cpp")
    params = [f"-GN_IN={n_in}", f"-GIN_BITS={in_bits}", f"-GN_OUT={n_out}", f"-GOUT_BITS={out_bits}"]
    params += [f"-GCLKS_PER_BIT={CLKS_PER_BIT}", f"-GDESIGN_ID=32'h{design_id:08x}"]
    binary = build_simulator(
        work,
        [work / name for name in sources],
        "gw_board",
        [work / "uart_bridge.cpp"],
        "bridge",
        work / "verilator.log",
        extra_args=["-Wno-lint", "-Wno-style", *params, "-CFLAGS", f"-DGW_CLKS_PER_BIT={CLKS_PER_BIT}"],
    )

    golden = bundle.golden()
    raw, expected = golden["hw.input_raw"], golden["hw.output_raw"]
    board = Board(binary)
    board.decoder = FrameDecoder(n_out, out_bits)
    try:
        board.send(encode_ident())
        (ident,) = board.collect(1)
        assert isinstance(ident, IdentResponse)
        framing.check_ident(ident, design_id=design_id, n_in=n_in, in_bits=in_bits, n_out=n_out, out_bits=out_bits)
        outputs = []
        for row in raw:  # one request in flight at a time: the simplest correct host
            board.send(encode_infer(row, in_bits))
            (response,) = board.collect(1)
            assert isinstance(response, InferResponse)
            outputs.append(response.values)
        np.testing.assert_array_equal(np.stack(outputs), expected)
    finally:
        board.close()
