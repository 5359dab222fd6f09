"""``sim``: the generated RTL itself, cycle-accurate in a Verilator simulation, behind the host part.

The simulator is compiled once per design (cached by content, see ``gatewright.hw.sim``) and stays
running while the model is loaded, so a call costs a pipe round trip plus the simulated cycles.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gatewright.build.bundle import Bundle
from gatewright.cache import cache_root
from gatewright.devices.base import Device, DeviceInfo, Model
from gatewright.devices.emu import HardwareModel
from gatewright.errors import BundleError, DeviceError
from gatewright.hw import sim


class SimulatedModel(HardwareModel):
    """The emulated model with the hardware part replaced by the simulated RTL."""

    simulator: sim.Simulator

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> SimulatedModel:
        architecture = bundle.manifest.get("architecture") or {}
        rtl_dir = bundle.path / str(architecture.get("rtl", "rtl"))
        design_file = rtl_dir / "design.json"
        if not design_file.is_file():
            raise DeviceError(
                f"{bundle.path}: the bundle has no RTL (built --until quantize?); rebuild it with "
                f"`gatewright build MODEL.onnx --until sim` or later to run it on 'sim'"
            )
        try:
            design = json.loads(design_file.read_text())
            shape = sim.SimShape(design["n_in"], design["in_bits"], design["n_out"], design["out_bits"])
            sources = [str(name) for name in design["sources"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"{design_file}: unreadable design description ({exc}); rebuild the bundle") from None
        model = super().from_bundle(bundle)
        assert isinstance(model, SimulatedModel)
        log = cache_root() / "sim" / "last-build.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        binary, _ = sim.build(rtl_dir, sources, shape, log)
        model.simulator = sim.Simulator(binary, shape)
        return model

    def run_raw(self, raw: np.ndarray) -> np.ndarray:
        result = self.simulator.run(raw)
        self.last_cycles = result.cycles
        return result.outputs

    def close(self) -> None:
        self.simulator.close()


class SimDevice(Device):
    kind = "sim"

    def info(self) -> DeviceInfo:
        return DeviceInfo(
            uri=self.uri,
            kind=self.kind,
            description="cycle-accurate Verilator simulation of the bundle's generated RTL",
            max_models=None,
            max_batch=None,
            dtypes=("float32", "float64"),
            runs="bundle",
        )

    def _load(self, source: Bundle | Path) -> Model:
        if not isinstance(source, Bundle):
            raise DeviceError(
                f"{source}: 'sim' runs firmware bundles; build one first with `gatewright build {source} --until sim`"
            )
        return SimulatedModel.from_bundle(source)

    def _release(self, model: Model) -> None:
        if isinstance(model, SimulatedModel):
            model.close()
