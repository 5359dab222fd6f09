from __future__ import annotations

import warnings

import pytest

from tests import onnx_models


@pytest.fixture(scope="session")
def sklearn_digits() -> dict[bool, tuple[bytes, object, object]]:
    """skl2onnx exports of one MLPClassifier, with ZipMap off (False) and on (True)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {zipmap: onnx_models.sklearn_mlp(zipmap) for zipmap in (False, True)}
