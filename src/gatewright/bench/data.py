"""Benchmark data: model inputs and labels from ``.npy``, ``.npz`` or ``.csv``, and their preprocessing.

Preprocessing computes in float64 in a fixed order (mean, std, scale and offset, shape, dtype), so the
same file gives the same bytes on every run and every machine: runs on different targets see
exactly the same inputs.
"""

from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gatewright.errors import InputDataError

SUFFIXES = (".npy", ".npz", ".csv")
HOW = ".npy (numpy.save), .npz (numpy.savez) or .csv (numbers separated by commas, one sample a row)"


def load_array(path: Path, key: str | None = None) -> np.ndarray:
    """The numeric array in ``path``: an ``.npy``, the array ``key`` of an ``.npz`` (or its only array), or a ``.csv``
    (comma-separated numbers; a first row that is not numeric is taken as a header and skipped)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputDataError(f"{path}: unknown data format '{path.suffix}'; save the data as {HOW}")
    if key is not None and suffix != ".npz":
        raise InputDataError(f"{path}: an array name ('{key}') applies only to .npz files; remove it")
    if not path.is_file():
        raise InputDataError(f"{path}: no such file; check the path")
    try:
        if suffix == ".csv":
            array = _load_csv(path)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                array = np.asarray(archive[_pick(path, archive.files, key)])
        else:
            array = np.asarray(np.load(path, allow_pickle=False))
    except UnicodeDecodeError:
        raise InputDataError(f"{path}: not a text file; write the .csv as UTF-8 text") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if "Object arrays" in str(exc):
            raise InputDataError(
                f"{path}: holds Python objects (a pickled object array), which are not loaded, for safety; "
                "save an array of numbers, e.g. numpy.save(path, array.astype(numpy.float32))"
            ) from None
        if "pickled" in str(exc):  # no NumPy header: a pickle, or not NumPy at all
            raise InputDataError(
                f"{path}: not a NumPy {suffix} file (a pickle is not loaded, for safety); save the data as {HOW}"
            ) from None
        raise InputDataError(f"{path}: cannot read it as {suffix} ({exc}); save the data as {HOW}") from None
    if array.dtype.kind not in "biuf":
        raise InputDataError(
            f"{path}: holds {array.dtype} values, not numbers; save an array of numbers (float32, int64, ...)"
        )
    if array.ndim == 0 or len(array) == 0:
        raise InputDataError(f"{path}: holds no samples; save an array with one sample a row ({HOW})")
    return array


def _pick(path: Path, names: list[str], key: str | None) -> str:
    if key is not None:
        if key not in names:
            raise InputDataError(f"{path}: no array '{key}'; the file holds {', '.join(names) or 'no arrays'}")
        return key
    if len(names) != 1:
        raise InputDataError(
            f"{path}: holds {len(names)} arrays ({', '.join(names) or 'none'}); name the one to use (data_key, ...)"
        )
    return names[0]


def _load_csv(path: Path) -> np.ndarray:
    with path.open(encoding="utf-8-sig") as file:
        first = file.readline()
    header = not any(_is_number(field) for field in first.split(","))  # column names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "input contained no data": reported below
        return np.loadtxt(path, delimiter=",", ndmin=2, skiprows=int(header), dtype=np.float64, encoding="utf-8-sig")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_labels(path: Path, key: str | None = None) -> np.ndarray:
    """Integer class labels, one per sample (a 1-D array or a column), as int64."""
    labels = load_array(path, key)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise InputDataError(
            f"{path}: labels of shape {labels.shape}; labels are one class number per sample (a 1-D array or a "
            "single column); for one-hot labels save labels.argmax(axis=1)"
        )
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels) & (labels == np.round(labels))):
        raise InputDataError(f"{path}: labels must be whole class numbers (0, 1, 2, ...); found fractional values")
    return labels.astype(np.int64)


@dataclass(frozen=True)
class Preprocessing:
    """``x -> ((x - mean) / std) * scale + offset``, reshaped to ``(samples, *shape)``, cast to ``dtype``."""

    scale: float = 1.0
    offset: float = 0.0
    mean: float | tuple[float, ...] | None = None  # one value, or one per value of a (flattened) sample
    std: float | tuple[float, ...] | None = None
    shape: tuple[int, ...] | None = None  # per sample, e.g. (64,) or (1, 8, 8)
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            value = getattr(self, name)
            if isinstance(value, list | tuple):
                object.__setattr__(self, name, tuple(float(v) for v in value))
        if self.shape is not None:
            object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
            if not self.shape or min(self.shape) < 1:
                raise InputDataError(f"shape {list(self.shape)}: give the size of each axis of one sample, all >= 1")
        if self.std is not None and 0.0 in np.atleast_1d(self.std):
            raise InputDataError("std must not be 0 (the data are divided by it)")
        try:
            kind: str = np.dtype(self.dtype).kind
        except TypeError:
            kind = "?"
        if kind not in "iuf":
            raise InputDataError(f"dtype '{self.dtype}' is not a numeric type; use float32, float64, int8, ...")

    def apply(self, x: np.ndarray) -> np.ndarray:
        """The model inputs for the samples ``x`` (first axis: samples)."""
        x = np.asarray(x).astype(np.float64)
        if x.ndim == 0:
            raise InputDataError("the data is a single number; give an array with one sample a row")
        original = x.shape
        x = x.reshape(len(x), -1)
        for name, value in (("mean", self.mean), ("std", self.std)):
            if isinstance(value, tuple) and len(value) not in (1, x.shape[1]):
                raise InputDataError(
                    f"{name} has {len(value)} values but a sample has {x.shape[1]}; give one value or one per value"
                )
        if self.mean is not None:
            x = x - np.asarray(self.mean, dtype=np.float64)
        if self.std is not None:
            x = x / np.asarray(self.std, dtype=np.float64)
        x = x * np.float64(self.scale) + np.float64(self.offset)
        if self.shape is not None:
            needed = int(np.prod(self.shape))
            if x.shape[1] != needed:
                raise InputDataError(
                    f"a sample has {x.shape[1]} values and the shape {list(self.shape)} needs {needed}; "
                    "fix preprocessing.shape"
                )
            x = x.reshape(len(x), *self.shape)
        else:
            x = x.reshape(original)
        return x.astype(self.dtype)

    def to_json(self) -> dict[str, Any]:
        def plain(value: float | tuple[float, ...] | None) -> float | list[float] | None:
            return list(value) if isinstance(value, tuple) else value

        return {
            "scale": self.scale,
            "offset": self.offset,
            "mean": plain(self.mean),
            "std": plain(self.std),
            "shape": None if self.shape is None else list(self.shape),
            "dtype": self.dtype,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(**data)
