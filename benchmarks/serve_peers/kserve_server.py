"""The KServe peer of serve_latency.py: a `kserve.Model` that runs the digits ONNX model on onnxruntime, served by
`kserve.ModelServer` with its defaults (REST and gRPC). Runs in its own virtual environment.

    python kserve_server.py MODEL.onnx HTTP_PORT GRPC_PORT [lean]

`lean` turns off the per-request access log and latency log lines that KServe writes by default.
"""

from __future__ import annotations

import logging
import sys

import kserve
import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse
from kserve.utils.utils import generate_uuid


class Digits(kserve.Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        self.session = ort.InferenceSession(self.path, providers=["CPUExecutionProvider"])
        self.ready = True
        return self.ready

    def predict(
        self, payload: InferRequest, headers: dict[str, str] | None = None, response_headers: dict | None = None
    ) -> InferResponse:
        x = payload.inputs[0].as_numpy().astype(np.float32, copy=False)
        label, probabilities = self.session.run(None, {"X": x})
        outputs = [
            InferOutput(name="label", shape=list(label.shape), datatype="INT64", data=label),
            InferOutput(name="probabilities", shape=list(probabilities.shape), datatype="FP32", data=probabilities),
        ]
        return InferResponse(model_name=self.name, infer_outputs=outputs, response_id=payload.id or generate_uuid())


if __name__ == "__main__":
    path, http_port, grpc_port, lean = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:] == ["lean"]
    del sys.argv[1:]  # kserve parses sys.argv for its own flags
    options = {"enable_latency_logging": False} if lean else {}
    server = kserve.ModelServer(http_port=http_port, grpc_port=grpc_port, **options)
    if lean:
        logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    server.start([Digits("digits", path)])
