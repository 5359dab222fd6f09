"""The device inventory: what can run a deployment here (local backends) and on registered agents,
what runs on each, and which device a deployment gets.

One model per FPGA unless the device says otherwise: a device's ``max_models`` (from its backend's
``info``) caps how many deployments it takes; None means no fixed limit (emulators, simulators, CPUs).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gatewright import devices
from gatewright.control.db import AgentRow
from gatewright.control.spec import DeploymentSpec
from gatewright.devices.base import DeviceInfo
from gatewright.devices.remote import list_agent_devices
from gatewright.errors import GatewrightError

log = logging.getLogger("gatewright.control")
REFRESH_S = 30.0
DEFAULT_KINDS = {"fpga": ("board", "sim", "emu"), "onnx": ("cpu",)}


class NoDeviceError(GatewrightError):
    """No device in the inventory can take the deployment now."""


@dataclass(frozen=True)
class InventoryDevice:
    info: DeviceInfo
    agent: str | None = None  # the agent's address for remote devices

    @property
    def uri(self) -> str:
        return self.info.uri

    @property
    def kind(self) -> str:
        """What runs the model: an agent's device reports the kind behind the agent."""
        return str(self.info.extra["device"]["kind"]) if self.agent is not None else self.info.kind

    def runs(self, engine: str) -> bool:
        return ("bundle" if engine == "fpga" else "onnx") in self.info.runs.split("+")


class Inventory:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self._devices: list[InventoryDevice] = []
        self._problems: dict[str, str] = {}  # agent address -> why its devices are missing
        self._checked = 0.0

    def token(self, agent: str | None) -> str | None:
        if agent is None:
            return None
        with self.sessions() as session:
            row = session.get(AgentRow, agent)
        return row.token if row is not None else None

    def devices(self, refresh: bool = False) -> list[InventoryDevice]:
        """Local devices (every registered backend but ``noop``) and the devices of registered agents."""
        if refresh or time.monotonic() - self._checked > REFRESH_S:
            found = [InventoryDevice(info) for info in devices.list() if info.kind not in ("noop", "remote")]
            problems: dict[str, str] = {}
            with self.sessions() as session:
                agents = [(a.address, a.token) for a in session.scalars(select(AgentRow))]
            for address, token in agents:
                try:
                    for uri in list_agent_devices(address, token):
                        with devices.open(uri, token=token) as device:
                            found.append(InventoryDevice(device.info(), address))
                except GatewrightError as exc:
                    problems[address] = str(exc)
                    log.warning("agent %s: its devices are left out: %s", address, exc)
            self._devices, self._problems, self._checked = found, problems, time.monotonic()
        return self._devices

    def problems(self) -> dict[str, str]:
        return dict(self._problems)

    def choose(
        self, spec: DeploymentSpec, in_use: dict[str, int], available: list[InventoryDevice] | None = None
    ) -> InventoryDevice:
        """The device for ``spec``: the one its selector names, else the first free one of the kinds that
        suit its engine (a board for the target first, then the simulated RTL, then the emulator).
        ``available`` defaults to the inventory, freshly discovered."""
        selector = spec.device
        if available is None:
            available = self.devices(refresh=True)
        candidates = [d for d in available if d.runs(spec.engine)]
        if selector.uri is not None:
            candidates = [d for d in candidates if d.uri == selector.uri]
            if not candidates:
                raise NoDeviceError(
                    f"device {selector.uri} is not in the inventory (known: {_known(available)}); "
                    "register its agent (POST /api/v1/agents) or fix spec.device.uri"
                )
        kinds = (selector.kind,) if selector.kind else DEFAULT_KINDS[spec.engine]
        if selector.kind == "noop":
            return InventoryDevice(devices.open("noop").info())
        for kind in kinds:
            for device in candidates:
                if kind == "remote" and device.agent is None:
                    continue
                if kind != "remote" and device.kind != kind:  # a "sim" on an agent is a sim too
                    continue
                if kind == "board" and device.info.extra.get("target") not in (None, spec.target):
                    continue
                limit = device.info.max_models
                if limit is None or in_use.get(device.uri, 0) < limit:
                    return device
        busy = [
            d.uri for d in candidates if d.info.max_models is not None and in_use.get(d.uri, 0) >= d.info.max_models
        ]
        raise NoDeviceError(
            f"no free device of kind {' or '.join(kinds)} for engine {spec.engine}"
            + (f" (busy: {', '.join(busy)}; one model per FPGA)" if busy else "")
            + f"; the inventory has: {_known(available)}. It is retried when a device frees up."
        )

    def describe(self, placed: dict[str, list[str]]) -> list[dict[str, Any]]:
        return [
            {
                "uri": d.uri,
                "kind": d.kind,
                "description": d.info.description,
                "max_models": d.info.max_models,
                "runs": d.info.runs,
                "agent": d.agent,
                "deployments": sorted(placed.get(d.uri, [])),
            }
            for d in self.devices()
        ]


def _known(available: list[InventoryDevice]) -> str:
    return ", ".join(d.uri for d in available) or "none"
