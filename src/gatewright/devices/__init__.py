"""Devices: one API for every place a model runs (see ``gatewright.devices.base``).

Backends register under the entry-point group ``gatewright.devices``; the environment variable
``GATEWRIGHT_DEVICES`` (comma-separated kinds) restricts which are used.
"""

from __future__ import annotations

import builtins
import os
from importlib.metadata import entry_points

from gatewright.devices.base import Device, DeviceInfo, Model
from gatewright.errors import DeviceError

ENTRY_POINT_GROUP = "gatewright.devices"


def backends() -> dict[str, type[Device]]:
    """Registered device kinds, restricted by ``GATEWRIGHT_DEVICES`` when set."""
    allowed = {k.strip() for k in os.environ.get("GATEWRIGHT_DEVICES", "").split(",") if k.strip()}
    found: dict[str, type[Device]] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if allowed and entry.name not in allowed:
            continue
        found[entry.name] = entry.load()
    return found


def list() -> builtins.list[DeviceInfo]:
    """Every device that can be opened here, with its capabilities."""
    infos = []
    for kind, backend in sorted(backends().items()):
        with backend(kind) as device:
            infos.append(device.info())
    return infos


def open(uri: str) -> Device:
    """Open a device by URI: ``emu``, ``cpu``, ..."""
    kind = uri.split(":", 1)[0]
    available = backends()
    if kind not in available:
        raise DeviceError(
            f"unknown device '{uri}'; available here: {', '.join(sorted(available)) or 'none'}"
            + (" (restricted by GATEWRIGHT_DEVICES)" if os.environ.get("GATEWRIGHT_DEVICES") else "")
        )
    return available[kind](uri)


__all__ = ["ENTRY_POINT_GROUP", "Device", "DeviceInfo", "Model", "backends", "list", "open"]
