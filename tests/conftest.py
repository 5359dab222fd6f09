from __future__ import annotations

import os
import tempfile
import warnings

import pytest
from hypothesis import settings

from tests import onnx_models

# The same examples on every run, so CI stays deterministic (run with HYPOTHESIS_PROFILE=explore to roam).
settings.register_profile("repeatable", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

# compiled simulators and cached bundles go to a fresh folder per run, not the user's ~/.cache
os.environ.setdefault("GATEWRIGHT_CACHE", tempfile.mkdtemp(prefix="gatewright-test-cache-"))


@pytest.fixture(scope="session")
def sklearn_digits() -> dict[bool, tuple[bytes, object, object]]:
    """skl2onnx exports of one MLPClassifier, with ZipMap off (False) and on (True)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {zipmap: onnx_models.sklearn_mlp(zipmap) for zipmap in (False, True)}
