"""Quantized accuracy and emulator throughput against onnxruntime, for two MLPs.

Models (trained here, exported by skl2onnx, nothing downloaded):
  digits   64-32-10       scikit-learn's bundled digits (pixels / 16), 70/30 split
  synth5   16-64-32-32-5  make_classification, 5 classes, 6000 samples, 70/30 split

Accuracy: the float model (onnxruntime) and the emulator at 4..16 weight bits, activations
calibrated on the training split (16 bits), scored on the held-out split; top-1 agreement
is the emulated label against the float label on that split.

Throughput: samples per second of the whole model (hardware part emulated, host part on
onnxruntime) through the device API, against a plain onnxruntime session on the float model,
timed in alternating rounds in the same process; the ratio is emu / onnxruntime.

    .venv/bin/python benchmarks/quant_accuracy.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
from rich.console import Console
from rich.table import Table
from skl2onnx import to_onnx
from sklearn.datasets import load_digits, make_classification
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

from gatewright.build.pipeline import quantize_model
from gatewright.model import intake
from gatewright.quant import PrecisionConfig

WEIGHT_BITS = (4, 6, 8, 10, 12, 16)


def digits() -> tuple[str, bytes, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return "digits 64-32-10", *_train((x / 16.0).astype(np.float32), y, (32,))


def synth5() -> tuple[str, bytes, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = make_classification(
        n_samples=6000, n_features=16, n_informative=12, n_redundant=2, n_classes=5, class_sep=1.5, random_state=0
    )
    return "synth5 16-64-32-32-5", *_train(x.astype(np.float32), y, (64, 32, 32))


def _train(
    x: np.ndarray, y: np.ndarray, hidden: tuple[int, ...]
) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = MLPClassifier(hidden_layer_sizes=hidden, max_iter=800, random_state=0).fit(x_train, y_train)
    model = to_onnx(mlp, x_train[:1], options={"zipmap": False}, target_opset={"": 17, "ai.onnx.ml": 3})
    return model.SerializeToString(), x_train, x_test, y_train, y_test


def samples_per_second(run: Callable[[], object], batch: int, seconds: float = 0.25) -> float:
    """Calls for about ``seconds``, after a warm-up; samples per second."""
    run()
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        run()
        calls += 1
    return calls * batch / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9, help="alternating timing rounds per batch size")
    args = parser.parse_args()
    console = Console(width=160)
    console.print(
        f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
        f"onnxruntime {ort.__version__}, numpy {np.__version__}"
    )

    accuracy = Table(title="Top-1 accuracy on held-out data (activations 16 bits, calibrated on the training split)")
    accuracy.add_column("model")
    accuracy.add_column("float")
    for bits in WEIGHT_BITS:
        accuracy.add_column(f"w{bits}", justify="right")
    accuracy.add_column("agreement w8", justify="right")
    accuracy.add_column("w8 a8", justify="right")
    accuracy.add_column("agreement w8 a8", justify="right")
    speed = Table(title="Throughput, samples/s (median of alternating rounds; ratio: median of the rounds' ratios)")
    columns = ("model", "formats", "batch", "emu", "emu hw part only", "onnxruntime", "emu / onnxruntime (min-max)")
    for column in columns:
        speed.add_column(column, justify="right")

    for name, model, x_train, x_test, _, y_test in (digits(), synth5()):
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        float_labels = session.run(["label"], {"X": x_test})[0]
        row = [name, f"{np.mean(float_labels == y_test):.2%}"]
        graph = intake(model)
        emulated = {}
        for bits in WEIGHT_BITS:
            emulated[bits] = quantize_model(graph, x_train, PrecisionConfig.build(bits=[str(bits)])).emulated()
            labels = emulated[bits].infer({"X": x_test})["label"]
            row.append(f"{np.mean(labels == y_test):.2%}")
        agreement = np.mean(emulated[8].infer({"X": x_test})["label"] == float_labels)
        row.append(f"{agreement:.2%}")
        # 8-bit input and activations: narrow enough for the emulator's float32 path
        narrow = quantize_model(graph, x_train, PrecisionConfig.build(bits=["8", "input=8", "activation=8"])).emulated()
        narrow_labels = narrow.infer({"X": x_test})["label"]
        row += [f"{np.mean(narrow_labels == y_test):.2%}", f"{np.mean(narrow_labels == float_labels):.2%}"]
        accuracy.add_row(*row)

        for formats, model8 in (("w8 a16", emulated[8]), ("w8 a8", narrow)):
            for batch in (1, 1024):
                x = np.resize(x_test, (batch, x_test.shape[1])).astype(np.float32)
                emu_rates, hw_rates, ort_rates = [], [], []
                for _ in range(args.rounds):
                    emu_rates.append(samples_per_second(lambda x=x, m=model8: m.infer({"X": x}), batch))
                    hw_rates.append(samples_per_second(lambda x=x, m=model8: m.emulator.run(x), batch))
                    ort_rates.append(samples_per_second(lambda x=x, s=session: s.run(None, {"X": x}), batch))
                emu, hw, peer = (statistics.median(r) for r in (emu_rates, hw_rates, ort_rates))
                # the ratio of each round, taken side by side, then the median: noise hits both alike
                ratios = sorted(e / o for e, o in zip(emu_rates, ort_rates, strict=True))
                spread = f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f})"
                speed.add_row(name, formats, str(batch), f"{emu:,.0f}", f"{hw:,.0f}", f"{peer:,.0f}", spread)
    console.print(accuracy)
    console.print(speed)


if __name__ == "__main__":
    main()
