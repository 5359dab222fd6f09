"""The control plane's web pages: one static page (HTML, vanilla JavaScript, CSS) over the REST API.

The files hold no data and need no build step; the control plane serves ``STATIC`` at ``/``.
"""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).parent / "static"

__all__ = ["STATIC"]
