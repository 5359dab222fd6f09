"""Where gatewright keeps what it can rebuild: compiled simulators, finished bundles, tool versions."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``GATEWRIGHT_CACHE``, or ``~/.cache/gatewright``."""
    return Path(os.environ.get("GATEWRIGHT_CACHE") or Path.home() / ".cache" / "gatewright")
