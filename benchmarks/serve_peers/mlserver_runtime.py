"""The MLServer peer of serve_latency.py: a custom runtime (an `mlserver.MLModel`) that runs the digits ONNX model
on onnxruntime. serve_latency.py copies it next to the model's model-settings.json
(implementation `mlserver_runtime.OnnxRuntime`) and starts `mlserver start` in MLServer's own virtual environment.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        uri = await get_model_uri(self._settings)
        self.session = ort.InferenceSession(uri, providers=["CPUExecutionProvider"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        label, probabilities = self.session.run(None, {"X": x})
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[
                NumpyCodec.encode_output("label", label),
                NumpyCodec.encode_output("probabilities", probabilities),
            ],
        )
