"""Write the example bench's models and data into this folder (deterministic; no download).

- ``digits_mlp.onnx``: the 64-32-10 MLP on scikit-learn's bundled digits (as in the demo), with
  ``digits_train.npy`` (calibration), ``digits_test.npy`` and ``digits_test_labels.npy``. The data
  are the raw pixel values (0 to 16); the experiment files scale them by 1/16 (preprocessing).
- ``mlp_<sizes>.onnx``: MLPs of other shapes trained on ``make_classification`` data, with
  ``mlp_<sizes>_train.npy``, ``_test.npy`` and ``_test_labels.npy``: the predictor's sweep.

Run: ``python examples/bench/make_models.py`` (scikit-learn and skl2onnx, both test dependencies).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skl2onnx import to_onnx
from sklearn.datasets import load_digits, make_classification
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

HERE = Path(__file__).resolve().parent
OPSETS = {"": 17, "ai.onnx.ml": 3}
# (inputs, hidden layers, classes): small enough to place and route in minutes on two cores
SWEEP = [(8, (16,), 3), (16, (16,), 4), (16, (32, 16), 5), (32, (16,), 6), (24, (24, 12), 4)]


def save(name: str, mlp: MLPClassifier, x_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> None:
    model = to_onnx(mlp, x_train[:1].astype(np.float32), options={"zipmap": False}, target_opset=OPSETS)
    (HERE / f"{name}.onnx").write_bytes(model.SerializeToString())
    stem = name.removesuffix("_mlp")
    np.save(HERE / f"{stem}_train.npy", x_train.astype(np.float32))
    np.save(HERE / f"{stem}_test.npy", x_test.astype(np.float32))
    np.save(HERE / f"{stem}_test_labels.npy", y_test.astype(np.int64))


def main() -> None:
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    mlp = MLPClassifier(hidden_layer_sizes=(32,), max_iter=600, random_state=0).fit(x_train / 16.0, y_train)
    save("digits_mlp", mlp, x_train, x_test, y_test)
    for n_in, hidden, classes in SWEEP:
        x, y = make_classification(
            n_samples=2000, n_features=n_in, n_informative=max(2, n_in // 2), n_classes=classes, random_state=n_in
        )
        x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
        mlp = MLPClassifier(hidden_layer_sizes=hidden, max_iter=400, random_state=0).fit(x_train, y_train)
        name = "mlp_" + "-".join(str(n) for n in (n_in, *hidden, classes))
        save(name, mlp, x_train, x_test, y_test)
        print(f"{name}: test accuracy {mlp.score(x_test, y_test):.3f}")


if __name__ == "__main__":
    main()
