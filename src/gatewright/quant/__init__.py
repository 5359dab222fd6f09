"""Fixed-point formats, calibration, post-training quantization and the golden integer emulator."""

from gatewright.quant.calibrate import Calibration, Range, as_batch, calibrate, quantize
from gatewright.quant.emulator import Emulator, Trace
from gatewright.quant.fixed import FixedFormat
from gatewright.quant.precision import DEFAULTS, UNCALIBRATED_INT_BITS, PrecisionConfig, PrecisionSpec
from gatewright.quant.qir import QActivation, QDense, QuantizedModel

__all__ = [
    "DEFAULTS",
    "UNCALIBRATED_INT_BITS",
    "Calibration",
    "Emulator",
    "FixedFormat",
    "PrecisionConfig",
    "PrecisionSpec",
    "QActivation",
    "QDense",
    "QuantizedModel",
    "Range",
    "Trace",
    "as_batch",
    "calibrate",
    "quantize",
]
