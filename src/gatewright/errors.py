"""One exception hierarchy. Every message says what went wrong, where, and how to fix it."""


class GatewrightError(Exception):
    """Base of every error gatewright raises on purpose. The CLI prints these without a traceback."""


class ModelLoadError(GatewrightError):
    """The file is not a readable, valid ONNX model."""


class UnsupportedModelError(GatewrightError):
    """The model is valid ONNX but gatewright cannot map the part that must run on hardware."""


class PrecisionError(GatewrightError):
    """A fixed-point format or a precision file is malformed or inconsistent."""


class InputDataError(GatewrightError):
    """Input or calibration data does not fit the model (names, shapes, dtypes, values)."""


class BundleError(GatewrightError):
    """A firmware bundle is missing, incomplete, or of an unknown schema."""


class DeviceError(GatewrightError):
    """A device cannot be opened or cannot run the request."""


class ToolError(GatewrightError):
    """An external tool (yosys, nextpnr, a packer, verilator) is missing or failed."""


class InferenceError(DeviceError):
    """One inference failed on the device; the device and its other models keep working.

    ``status`` names the failure as gRPC does: "internal" (the backend failed), "unavailable" (the
    device or agent cannot be reached), "deadline_exceeded" (no answer in time)."""

    def __init__(self, message: str, status: str = "internal") -> None:
        super().__init__(message)
        self.status = status


class StoreError(GatewrightError):
    """An artifact store or a reference (file://, s3://, oci://, http(s)://) cannot be read or written."""
