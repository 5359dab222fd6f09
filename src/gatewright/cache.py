"""Where gatewright keeps what it can rebuild: compiled simulators, finished bundles, tool versions."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_root() -> Path:
    """``GATEWRIGHT_CACHE``, or ``~/.cache/gatewright``."""
    return Path(os.environ.get("GATEWRIGHT_CACHE") or Path.home() / ".cache" / "gatewright")


def cached_build(kind: str, key: str, name: str, make: Callable[[Path], Path]) -> tuple[Path, bool]:
    """The file ``name`` kept under ``cache_root()/kind/key``, and whether it was there already.

    When missing, ``make(workdir)`` builds it in a fresh folder beside the entry and returns its path;
    the entry then appears in one rename, so a reader never sees half of it (and of two concurrent
    builds of the same key, either may win: they are the same).
    """
    target = cache_root() / kind / key
    final = target / name
    if final.is_file():
        return final, True
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    try:
        built = make(work)
        staged = work / "ready"
        staged.mkdir()
        shutil.move(built, staged / name)
        try:
            staged.rename(target)
        except OSError:
            if not final.is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final, False
