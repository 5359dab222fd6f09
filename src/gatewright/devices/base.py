"""The device API every backend implements: a device loads models; a model runs inferences.

A backend is small: subclass ``Device`` (``info`` and ``_load``) and ``Model`` (``_infer``), and
register the device class under the entry-point group ``gatewright.devices``. Input checking and
the context-manager protocol live here, once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

from gatewright.build.bundle import Bundle
from gatewright.errors import DeviceError
from gatewright.model.ir import TensorSpec
from gatewright.model.runtime import check_inputs


@dataclass(frozen=True)
class DeviceInfo:
    """What a device is and can do."""

    uri: str
    kind: str
    description: str
    max_models: int | None  # None: no fixed limit
    max_batch: int | None
    dtypes: tuple[str, ...]
    runs: str  # "bundle", "onnx" or "bundle+onnx": what ``load`` accepts
    extra: dict[str, Any] = field(default_factory=dict)


class Model(ABC):
    """A model loaded on a device. ``infer`` takes and returns arrays keyed by the ONNX names."""

    def __init__(self, name: str, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> None:
        self.name = name
        self.inputs = inputs
        self.outputs = outputs

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run one batch; outputs keyed and ordered as the model declares them."""
        return self._infer(check_inputs(self.inputs, inputs, where=self.name))

    @abstractmethod
    def _infer(self, feeds: dict[str, Any]) -> dict[str, Any]: ...


class Device(ABC):
    """A place where models run. Use as a context manager, or call ``close``."""

    kind: ClassVar[str]

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.models: list[Model] = []
        self.closed = False

    @abstractmethod
    def info(self) -> DeviceInfo: ...

    def load(self, source: Bundle | str | Path) -> Model:
        """Load a firmware bundle (or its directory) or, where the device runs them, an ONNX file."""
        if self.closed:
            raise DeviceError(f"device '{self.uri}' is closed; open it again")
        limit = self.info().max_models
        if limit is not None and len(self.models) >= limit:
            raise DeviceError(f"device '{self.uri}' holds {limit} model(s) already; unload one first")
        if not isinstance(source, Bundle):
            path = Path(source)
            if path.is_dir():
                source = Bundle(path)
            elif not path.is_file():
                raise DeviceError(f"{path}: no such bundle directory or model file")
        model = self._load(source if isinstance(source, Bundle) else Path(source))
        self.models.append(model)
        return model

    @abstractmethod
    def _load(self, source: Bundle | Path) -> Model: ...

    def unload(self, model: Model) -> None:
        self.models.remove(model)

    def close(self) -> None:
        self.models.clear()
        self.closed = True

    def __enter__(self) -> Device:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
