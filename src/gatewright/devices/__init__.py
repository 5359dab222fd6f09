"""Devices: one API for every place a model runs (see ``gatewright.devices.base``).

Backends register under the entry-point group ``gatewright.devices``; the environment variable
``GATEWRIGHT_DEVICES`` (comma-separated kinds) restricts which are used. A URI names a device:
``emu``, ``sim``, ``cpu``, ``noop``, ``board:ulx3s?port=/dev/ttyUSB0``, ``remote://host:port/sim``.
"""

from __future__ import annotations

import builtins
import logging
import os
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from gatewright.devices.base import (
    Device,
    DeviceInfo,
    Model,
    ModelInfo,
    Op,
    QueuePair,
    SelftestResult,
    TensorInfo,
)
from gatewright.errors import DeviceError, GatewrightError

ENTRY_POINT_GROUP = "gatewright.devices"
log = logging.getLogger("gatewright")


def _registered() -> dict[str, EntryPoint]:
    allowed = {k.strip() for k in os.environ.get("GATEWRIGHT_DEVICES", "").split(",") if k.strip()}
    return {e.name: e for e in entry_points(group=ENTRY_POINT_GROUP) if not allowed or e.name in allowed}


def _load(entry: EntryPoint) -> type[Device] | None:
    try:
        backend: type[Device] = entry.load()
    except Exception as exc:  # one broken plugin must not take the others down
        log.warning("device backend '%s' (%s) cannot be loaded: %s", entry.name, entry.value, exc)
        return None
    return backend


def backends() -> dict[str, type[Device]]:
    """Registered device kinds, restricted by ``GATEWRIGHT_DEVICES`` when set."""
    loaded = {name: _load(entry) for name, entry in _registered().items()}
    return {name: backend for name, backend in loaded.items() if backend is not None}


def kind_of(uri: str) -> str:
    """The backend a URI names: the part before ``:`` (``remote://...`` is ``remote``)."""
    return uri.split(":", 1)[0]


def list() -> builtins.list[DeviceInfo]:
    """Every device that can be opened here, with its capabilities. A device that does not answer
    (an agent that is down, a board that is unplugged) is left out with a warning."""
    infos = []
    for _, backend in sorted(backends().items()):
        for uri in backend.discover():
            try:
                with backend(uri) as device:
                    infos.append(device.info())
            except GatewrightError as exc:
                log.warning("device %s left out: %s", uri, exc)
    return infos


def open(uri: str, **options: Any) -> Device:
    """Open a device by URI: ``emu``, ``cpu``, ``sim``, ``noop``, ``board:NAME?port=...``,
    ``remote://host:port/KIND``. Options go to the backend (``token=`` for ``remote``)."""
    kind = kind_of(uri)
    registered = _registered()  # only the backend asked for is imported (grpc, pyserial load slowly)
    backend = _load(registered[kind]) if kind in registered else None
    if backend is None:
        raise DeviceError(
            f"unknown device '{uri}'; available here: {', '.join(sorted(backends())) or 'none'}"
            + (" (restricted by GATEWRIGHT_DEVICES)" if os.environ.get("GATEWRIGHT_DEVICES") else "")
        )
    return backend(uri, **options)


__all__ = [
    "ENTRY_POINT_GROUP",
    "Device",
    "DeviceInfo",
    "Model",
    "ModelInfo",
    "Op",
    "QueuePair",
    "SelftestResult",
    "TensorInfo",
    "backends",
    "kind_of",
    "list",
    "open",
]
