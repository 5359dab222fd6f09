"""The gRPC front end: ``inference.GRPCInferenceService`` of the Open Inference Protocol with Triton's
extensions, on grpc.aio in the same event loop as the REST front end (one core, one batcher).

Outputs always travel as ``raw_output_contents`` (as Triton sends them); inputs may come as typed
``contents`` or as ``raw_input_contents``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
from google.protobuf.json_format import ParseDict

from gatewright.serve import inference_pb2 as pb
from gatewright.serve import inference_pb2_grpc as pb_grpc
from gatewright.serve.errors import RequestError, ServeError
from gatewright.serve.infer import InferRequest, RequestedOutput, failed, read_shm, run, shm_ref, succeeded
from gatewright.serve.server import InferenceServer
from gatewright.serve.tensors import DATATYPES, check_datatype, check_shape, from_raw

log = logging.getLogger("gatewright.serve")

# Which typed field of InferTensorContents carries each datatype.
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _param(value: Any) -> Any:
    choice = value.WhichOneof("parameter_choice")
    return None if choice is None else getattr(value, choice)


def _params(mapping: Any) -> dict[str, Any]:
    return {key: _param(value) for key, value in mapping.items()}


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, server: InferenceServer) -> None:
        self.server = server

    async def _fail(self, context: grpc.aio.ServicerContext, exc: ServeError) -> None:
        await context.abort(getattr(grpc.StatusCode, exc.grpc_code), str(exc))

    # -- health and metadata --------------------------------------------------------------------------
    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.server.ready())

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        try:
            self.server.model(request.name, request.version)
        except ServeError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**self.server.metadata())

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        try:
            served = self.server.model(request.name, request.version)
        except ServeError as exc:
            await self._fail(context, exc)
            raise
        return ParseDict(served.metadata(self.server.versions(request.name)), pb.ModelMetadataResponse())

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelConfigResponse:
        try:
            served = self.server.model(request.name, request.version)
        except ServeError as exc:
            await self._fail(context, exc)
            raise
        return pb.ModelConfigResponse(config=served.config)

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        try:
            stats = self.server.statistics(request.name, request.version)
        except ServeError as exc:
            await self._fail(context, exc)
            raise
        return ParseDict({"model_stats": stats}, pb.ModelStatisticsResponse())

    # -- inference ------------------------------------------------------------------------------------
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        try:
            return await self._infer(request)
        except ServeError as exc:
            await self._fail(context, exc)
            raise

    async def ModelStreamInfer(
        self, requests: AsyncIterator[pb.ModelInferRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        async for request in requests:  # one request at a time, in order; a bad one does not end the stream
            try:
                response = await self._infer(request)
            except ServeError as exc:
                yield pb.ModelStreamInferResponse(error_message=str(exc))
                continue
            yield pb.ModelStreamInferResponse(infer_response=response)

    async def _infer(self, message: pb.ModelInferRequest) -> pb.ModelInferResponse:
        start = time.perf_counter_ns()
        served = None
        try:
            request = self._decode(message)
            decoded = time.perf_counter_ns()
            served, outputs, timing = await run(self.server, request)
            encoding = time.perf_counter_ns()
            response = pb.ModelInferResponse(model_name=served.name, model_version=str(served.version), id=message.id)
            for out in outputs:
                tensor = response.outputs.add(name=out.name, datatype=out.datatype, shape=out.shape)
                if out.shm is not None:
                    tensor.parameters["shared_memory_region"].string_param = out.shm.region
                    tensor.parameters["shared_memory_offset"].int64_param = out.shm.offset
                    tensor.parameters["shared_memory_byte_size"].int64_param = out.shm.byte_size
                    response.raw_output_contents.append(b"")
                else:
                    response.raw_output_contents.append(out.raw())
            succeeded(
                self.server, served, message.id, timing, (start, decoded, encoding, time.perf_counter_ns()), "GRPC"
            )
            return response
        except ServeError as exc:
            failed(self.server, served, message.model_name, message.model_version, start, exc)
            raise

    def _decode(self, message: pb.ModelInferRequest) -> InferRequest:
        request = InferRequest(model=message.model_name, version=message.model_version, id=message.id)
        raw = list(message.raw_input_contents)
        raw_at = 0
        for tensor in message.inputs:
            name = tensor.name
            datatype = check_datatype(name, tensor.datatype)
            shape = check_shape(name, list(tensor.shape))
            params = _params(tensor.parameters)
            ref = shm_ref(params, f"input '{name}'")
            if ref is not None:
                array = read_shm(self.server, ref, name, datatype, shape)
            elif raw:
                if raw_at >= len(raw):
                    raise RequestError(f"input '{name}': raw_input_contents has fewer entries than inputs")
                array = from_raw(name, datatype, shape, raw[raw_at])
                raw_at += 1
            else:
                array = _from_contents(name, datatype, shape, tensor.contents)
            if name in request.inputs:
                raise RequestError(f"input '{name}' is given twice")
            request.inputs[name] = (datatype, array)
        if raw and raw_at != len(raw):
            raise RequestError(f"raw_input_contents has {len(raw)} entries for {raw_at} inputs")
        if message.outputs:
            request.outputs = []
            for out in message.outputs:
                params = _params(out.parameters)
                count = params.get("classification", 0)
                if not isinstance(count, int) or count < 0:
                    raise RequestError(f"output '{out.name}': classification must be a whole number")
                request.outputs.append(RequestedOutput(out.name, True, count, shm_ref(params, f"output '{out.name}'")))
        return request

    # -- repository -----------------------------------------------------------------------------------
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        return ParseDict({"models": self.server.index(request.ready)}, pb.RepositoryIndexResponse())

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        params = _params(request.parameters)
        config = params.get("config")
        files = {k[5:]: v for k, v in params.items() if k.startswith("file:")}
        try:
            if config is not None and not isinstance(config, str):
                raise RequestError("load: the 'config' parameter must be the model configuration as a JSON string")
            if any(not isinstance(v, bytes) for v in files.values()):
                raise RequestError("load: file parameters must hold the file's content as bytes")
            if files and config is None:
                raise RequestError("load: file parameters need the 'config' parameter too (Triton's rule)")
            await self.server.load(request.model_name, config, files or None)
        except ServeError as exc:
            await self._fail(context, exc)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        try:
            await self.server.unload(request.model_name)
        except ServeError as exc:
            await self._fail(context, exc)
        return pb.RepositoryModelUnloadResponse()

    # -- shared memory --------------------------------------------------------------------------------
    async def SystemSharedMemoryStatus(
        self, request: pb.SystemSharedMemoryStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.SystemSharedMemoryStatusResponse:
        try:
            regions = self.server.shm_status(request.name)
        except ServeError as exc:
            await self._fail(context, exc)
            raise
        return ParseDict({"regions": {r["name"]: r for r in regions}}, pb.SystemSharedMemoryStatusResponse())

    async def SystemSharedMemoryRegister(
        self, request: pb.SystemSharedMemoryRegisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.SystemSharedMemoryRegisterResponse:
        try:
            self.server.shm_register(request.name, request.key, request.offset, request.byte_size)
        except ServeError as exc:
            await self._fail(context, exc)
        return pb.SystemSharedMemoryRegisterResponse()

    async def SystemSharedMemoryUnregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        try:
            self.server.shm_unregister(request.name)
        except ServeError as exc:
            await self._fail(context, exc)
        return pb.SystemSharedMemoryUnregisterResponse()

    async def CudaSharedMemoryStatus(
        self, request: pb.CudaSharedMemoryStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.CudaSharedMemoryStatusResponse:
        if request.name:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no CUDA shared memory region '{request.name}'")
        return pb.CudaSharedMemoryStatusResponse()

    async def CudaSharedMemoryRegister(
        self, request: pb.CudaSharedMemoryRegisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.CudaSharedMemoryRegisterResponse:
        await self._fail(context, self.server.cuda_shm_unsupported())
        return pb.CudaSharedMemoryRegisterResponse()

    async def CudaSharedMemoryUnregister(
        self, request: pb.CudaSharedMemoryUnregisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.CudaSharedMemoryUnregisterResponse:
        if request.name:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no CUDA shared memory region '{request.name}'")
        return pb.CudaSharedMemoryUnregisterResponse()

    # -- trace and log settings -----------------------------------------------------------------------
    async def TraceSetting(
        self, request: pb.TraceSettingRequest, context: grpc.aio.ServicerContext
    ) -> pb.TraceSettingResponse:
        update = {key: (list(value.value) or None) for key, value in request.settings.items()}
        try:
            settings = self.server.trace_settings(request.model_name, update or None)
        except ServeError as exc:
            await self._fail(context, exc)
            raise
        response = pb.TraceSettingResponse()
        for key, values in settings.items():
            response.settings[key].value.extend(values)
        return response

    async def LogSettings(
        self, request: pb.LogSettingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.LogSettingsResponse:
        update = {key: _param(value) for key, value in request.settings.items()}
        try:
            settings = self.server.update_log_settings(update) if update else self.server.log_settings
        except ServeError as exc:
            await self._fail(context, exc)
            raise
        response = pb.LogSettingsResponse()
        for key, value in settings.items():
            field = (
                "bool_param"
                if isinstance(value, bool)
                else "uint32_param"
                if isinstance(value, int)
                else "string_param"
            )
            setattr(response.settings[key], field, value)
        return response


def _from_contents(name: str, datatype: str, shape: tuple[int, ...], contents: pb.InferTensorContents) -> np.ndarray:
    if datatype not in _CONTENTS:
        raise RequestError(f"input '{name}': {datatype} travels only as raw_input_contents")
    values = getattr(contents, _CONTENTS[datatype])
    count = int(np.prod(shape)) if shape else 1
    if len(values) != count:
        raise RequestError(f"input '{name}': {len(values)} elements given, shape {list(shape)} holds {count}")
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    try:
        return np.array(values, dtype=DATATYPES[datatype]).reshape(shape)
    except OverflowError:
        raise RequestError(f"input '{name}': a value does not fit {datatype}") from None


def add_to(grpc_server: grpc.aio.Server, server: InferenceServer) -> None:
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(server), grpc_server)
