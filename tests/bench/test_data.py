"""Benchmark data: what each format loads to, what each mistake says, and preprocessing to the exact bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gatewright.bench.data import Preprocessing, load_array, load_labels
from gatewright.errors import InputDataError


def test_npy_loads_as_saved(tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "x.npy", x)
    loaded = load_array(tmp_path / "x.npy")
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, x)


def test_npz_gives_the_named_or_the_only_array(tmp_path: Path) -> None:
    np.savez(tmp_path / "one.npz", inputs=np.ones((2, 3)))
    np.savez(tmp_path / "two.npz", inputs=np.ones((2, 3)), labels=np.array([1, 2]))
    assert load_array(tmp_path / "one.npz").shape == (2, 3)
    np.testing.assert_array_equal(load_array(tmp_path / "two.npz", "labels"), [1, 2])
    with pytest.raises(InputDataError, match=r"two.npz: holds 2 arrays \(inputs, labels\); name the one"):
        load_array(tmp_path / "two.npz")
    with pytest.raises(InputDataError, match=r"no array 'x'; the file holds inputs, labels"):
        load_array(tmp_path / "two.npz", "x")


def test_csv_with_and_without_a_header(tmp_path: Path) -> None:
    (tmp_path / "plain.csv").write_text("1,2,3\n4,5.5,-6e1\n")
    (tmp_path / "header.csv").write_text("a,b,c\n1,2,3\n")
    (tmp_path / "column.csv").write_text("label\n3\n1\n")
    np.testing.assert_array_equal(load_array(tmp_path / "plain.csv"), [[1, 2, 3], [4, 5.5, -60]])
    np.testing.assert_array_equal(load_array(tmp_path / "header.csv"), [[1, 2, 3]])
    assert load_array(tmp_path / "column.csv").shape == (2, 1)


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("x.txt", "1,2", r"x.txt: unknown data format '.txt'; save the data as .npy"),
        ("bad.csv", "1,2\n3,abc\n", r"bad.csv: cannot read it as .csv \(.*abc"),
        ("empty.csv", "a,b\n", r"empty.csv: holds no samples"),
        ("broken.npy", "not numpy", r"broken.npy: not a NumPy .npy file \(a pickle is not loaded"),
        ("broken.npz", "PK\x03\x04 truncated", r"broken.npz: cannot read it as .npz"),
    ],
)
def test_unreadable_data_says_why(tmp_path: Path, name: str, content: str, fragment: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(InputDataError, match=fragment):
        load_array(tmp_path / name)


def test_missing_file_and_misplaced_key(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match=r"nothere.npy: no such file; check the path"):
        load_array(tmp_path / "nothere.npy")
    np.save(tmp_path / "x.npy", np.ones(3))
    with pytest.raises(InputDataError, match=r"an array name \('k'\) applies only to .npz files"):
        load_array(tmp_path / "x.npy", "k")


def test_pickled_objects_and_strings_are_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(InputDataError, match=r"objects.npy: holds Python objects \(a pickled object array\)"):
        load_array(tmp_path / "objects.npy")
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    with pytest.raises(InputDataError, match=r"text.npy: holds <U1 values, not numbers"):
        load_array(tmp_path / "text.npy")


def test_labels_are_int64_from_a_vector_a_column_or_whole_floats(tmp_path: Path) -> None:
    np.save(tmp_path / "vector.npy", np.array([0, 2, 1], dtype=np.int32))
    np.save(tmp_path / "column.npy", np.array([[1.0], [0.0]]))
    (tmp_path / "labels.csv").write_text("class\n4\n2\n")
    for name, expected in (("vector.npy", [0, 2, 1]), ("column.npy", [1, 0]), ("labels.csv", [4, 2])):
        labels = load_labels(tmp_path / name)
        assert labels.dtype == np.int64
        assert labels.tolist() == expected


def test_labels_that_are_not_classes_are_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "fraction.npy", np.array([0.5, 1.0]))
    np.save(tmp_path / "onehot.npy", np.eye(3))
    with pytest.raises(InputDataError, match=r"fraction.npy: labels must be whole class numbers"):
        load_labels(tmp_path / "fraction.npy")
    with pytest.raises(InputDataError, match=r"onehot.npy: labels of shape \(3, 3\);.*argmax"):
        load_labels(tmp_path / "onehot.npy")


def test_preprocessing_computes_in_float64_in_a_fixed_order() -> None:
    x = np.array([[0, 16, 3], [8, 4, 1]], dtype=np.float32)
    pre = Preprocessing(scale=0.0625, offset=-0.5, mean=(1.0, 2.0, 3.0), std=3.0, shape=(3, 1), dtype="float32")
    out = pre.apply(x)
    expected = (((x.astype(np.float64) - [1.0, 2.0, 3.0]) / 3.0) * 0.0625 - 0.5).reshape(2, 3, 1).astype(np.float32)
    assert out.dtype == np.float32
    assert out.shape == (2, 3, 1)
    assert out.tobytes() == expected.tobytes()
    assert out[0, 1, 0] == np.float32((16 - 2) / 3 * 0.0625 - 0.5)
    assert pre.apply(x).tobytes() == out.tobytes()  # run to run: the same bytes


def test_preprocessing_defaults_keep_values_and_shape() -> None:
    x = np.arange(8, dtype=np.int64).reshape(2, 2, 2)
    out = Preprocessing().apply(x)
    assert out.dtype == np.float32
    assert out.shape == (2, 2, 2)
    np.testing.assert_array_equal(out, x)
    assert Preprocessing(scale=1 / 16, dtype="float64").apply(np.array([[16.0, 8.0]])).tolist() == [[1.0, 0.5]]


def test_preprocessing_mistakes_say_what_to_fix() -> None:
    x = np.ones((2, 4))
    with pytest.raises(InputDataError, match=r"a sample has 4 values and the shape \[3\] needs 3"):
        Preprocessing(shape=(3,)).apply(x)
    with pytest.raises(InputDataError, match=r"mean has 3 values but a sample has 4"):
        Preprocessing(mean=(1.0, 2.0, 3.0)).apply(x)
    with pytest.raises(InputDataError, match=r"std must not be 0"):
        Preprocessing(std=(1.0, 0.0))
    with pytest.raises(InputDataError, match=r"dtype 'floaty' is not a numeric type"):
        Preprocessing(dtype="floaty")
    with pytest.raises(InputDataError, match=r"shape \[0\]: give the size of each axis"):
        Preprocessing(shape=(0,))


def test_preprocessing_json_round_trip() -> None:
    pre = Preprocessing(scale=0.5, offset=1.0, mean=[0.1, 0.2], std=2.0, shape=[2], dtype="float64")  # type: ignore[arg-type]
    assert pre.mean == (0.1, 0.2)
    assert pre.shape == (2,)
    data = pre.to_json()
    assert data == {"scale": 0.5, "offset": 1.0, "mean": [0.1, 0.2], "std": 2.0, "shape": [2], "dtype": "float64"}
    assert Preprocessing.from_json(data) == pre
