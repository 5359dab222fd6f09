"""The gRPC floor of serve_latency.py: a grpc.aio server with only ModelInfer of inference.GRPCInferenceService,
answering every call with one fixed ModelInferResponse (the outputs in the file named by GW_BENCH_FLOOR_RESPONSE,
as raw_output_contents).

    python benchmarks/serve_peers/floor_grpc.py PORT [MODEL.onnx]

With MODEL.onnx it is the "floor + model" row instead: it runs the model on each call (FloorModel).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import grpc
import numpy as np

from gatewright.serve import inference_pb2, inference_pb2_grpc

DTYPES = {"INT64": np.int64, "FP32": np.float32}


def fixed_response() -> inference_pb2.ModelInferResponse:
    body = json.loads(Path(os.environ["GW_BENCH_FLOOR_RESPONSE"]).read_bytes())
    response = inference_pb2.ModelInferResponse(model_name=body["model_name"], model_version=body["model_version"])
    for output in body["outputs"]:
        response.outputs.add(name=output["name"], datatype=output["datatype"], shape=output["shape"])
        response.raw_output_contents.append(np.asarray(output["data"], DTYPES[output["datatype"]]).tobytes())
    return response


class Floor(inference_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self) -> None:
        self.response = fixed_response()

    async def ModelInfer(
        self, request: inference_pb2.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.ModelInferResponse:
        return self.response


class FloorModel(inference_pb2_grpc.GRPCInferenceServiceServicer):
    """Floor + model: decode the raw input, run the model on onnxruntime, answer its outputs raw; nothing else."""

    def __init__(self, model: str) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]

    async def ModelInfer(
        self, request: inference_pb2.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.ModelInferResponse:
        tensor = request.inputs[0]
        x = np.frombuffer(request.raw_input_contents[0], np.float32).reshape(tensor.shape)
        results = self.session.run(self.outputs, {tensor.name: x})
        response = inference_pb2.ModelInferResponse(model_name=request.model_name, model_version="1")
        for name, value in zip(self.outputs, results, strict=True):
            datatype = "INT64" if value.dtype == np.int64 else "FP32"
            response.outputs.add(name=name, datatype=datatype, shape=value.shape)
            response.raw_output_contents.append(value.tobytes())
        return response


async def serve(port: int, model: str | None) -> None:
    server = grpc.aio.server()
    servicer = FloorModel(model) if model else Floor()
    inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None))
