"""Drive a running gatewright serve with KServe's own Python clients (run in its own process:
kserve registers the standard "inference" protobuf messages, as tritonclient does).

    python kserve_client.py HTTP_ADDRESS GRPC_ADDRESS INPUT.npy  ->  JSON on stdout
"""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig


async def main(http: str, grpc_address: str, x: np.ndarray) -> dict[str, object]:
    found: dict[str, object] = {}
    for protocol in ("v1", "v2"):
        rest = InferenceRESTClient(RESTConfig(protocol=protocol, timeout=30))
        base = f"http://{http}"
        found[f"rest_{protocol}_live"] = await rest.is_server_live(base)
        found[f"rest_{protocol}_model_ready"] = await rest.is_model_ready(base, "digits")
        if protocol == "v1":
            answer = await rest.infer(base, {"instances": x.tolist()}, model_name="digits")
            found["rest_v1_labels"] = [p["label"] for p in answer["predictions"]]
        else:
            found["rest_v2_ready"] = await rest.is_server_ready(base)
            tensor = InferInput("X", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x, binary_data=False)
            request = InferRequest(model_name="digits", infer_inputs=[tensor], request_id="k1")
            answer = await rest.infer(base, request, model_name="digits")
            found["rest_v2_labels"] = next(o for o in answer.outputs if o.name == "label").as_numpy().tolist()
            found["rest_v2_id"] = answer.id
        await rest.close()
    client = InferenceGRPCClient(grpc_address)
    found["grpc_live"] = await client.is_server_live()
    found["grpc_ready"] = await client.is_server_ready()
    found["grpc_model_ready"] = await client.is_model_ready("digits")
    tensor = InferInput("X", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    answer = await client.infer(InferRequest(model_name="digits", infer_inputs=[tensor], request_id="k2"))
    found["grpc_labels"] = next(o for o in answer.outputs if o.name == "label").as_numpy().tolist()
    found["grpc_id"] = answer.id
    await client.close()
    return found


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], np.load(sys.argv[3])))))
