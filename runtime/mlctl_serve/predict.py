"""``create_predict_app``: the Open Inference Protocol inference API with dynamic batching."""

from __future__ import annotations

import array
import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from mlctl_serve.app import (
    NOT_READY_HEADERS,
    ServingApp,
    compile_module,
    exit_process,
    select_device,
    warn_compile_fallback,
)
from mlctl_serve.batching import Batcher, Job, QueueFull
from mlctl_serve.http import (
    ClientGone,
    Receive,
    Scope,
    Send,
    respond,
    respond_error,
    watch_disconnect,
)
from mlctl_serve.protocol import InferRequest, TensorSpec, infer_response, parse_infer_request
from mlctl_serve.settings import Settings

if TYPE_CHECKING:
    import torch

log = logging.getLogger("mlctl_serve")

#: Loads the model: ``load(weights_path, device) -> torch.nn.Module`` (in eval mode, on ``device``).
Loader = Callable[[str, "torch.device"], Any]

_DTYPES = {
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "BOOL": "bool",
}


class RequestTimeout(Exception):
    pass


class PredictApp(ServingApp):
    def __init__(
        self,
        load: Loader,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        settings: Settings,
        *,
        on_load_failure: Callable[[], None] = exit_process,
    ) -> None:
        super().__init__(settings, on_load_failure=on_load_failure)
        self.loader = load
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.model: Any = None
        self.device: torch.device | None = None
        self.batcher: Batcher[InferRequest] | None = None
        self._metadata = orjson.dumps(
            {
                "name": settings.model_name,
                "versions": [settings.model_version],
                "platform": "pytorch",
                "inputs": [_tensor(s) for s in self.inputs],
                "outputs": [_tensor(s) for s in self.outputs],
            }
        )
        self.add_model_route("infer", ("POST",), self._infer)

    def metadata(self) -> bytes:
        return self._metadata

    # --- loading -------------------------------------------------------------------------------------

    def load(self) -> None:
        import torch

        self.device = device = select_device(self.settings.device)
        self.device_type = device.type
        model = self.loader(self.settings.model_path, device)
        if self.settings.compile:
            try:
                compiled = compile_module(model, self.settings.compile_mode)
                self._warm_up(compiled)
                model = compiled
            except Exception as exc:  # unsupported platform, no compiler, a graph break gone wrong
                warn_compile_fallback(exc)
                self._warm_up(model)
        else:
            self._warm_up(model)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.model = model
        if self.batcher is not None:
            self.batcher.delay_s = self.settings.batch_delay_s(device.type)

    def _warm_up(self, model: Any) -> None:
        import torch

        with torch.inference_mode():
            for rows in self.settings.warmup_batch_sizes:
                tensors = [
                    torch.zeros(
                        (rows, *spec.shape[1:]), dtype=getattr(torch, _DTYPES[spec.datatype]), device=self.device
                    )
                    for spec in self.inputs
                ]
                model(*tensors)

    async def on_startup(self) -> None:
        self.batcher = Batcher(
            self._run_batch,
            max_rows=self.settings.max_batch_size,
            delay_s=self.settings.batch_delay_s("cpu"),
            max_queue=self.settings.max_queue,
            executor=self.executor,
            metrics=self.metrics,
        )
        self.batcher.start()

    async def on_shutdown(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()

    # --- the model thread ----------------------------------------------------------------------------

    def _run_batch(self, jobs: Sequence[Job[InferRequest]]) -> list[list[tuple[TensorSpec, list[int], list[Any]]]]:
        import torch

        started = time.perf_counter()
        rows = sum(job.rows for job in jobs)
        tensors = []
        for spec in self.inputs:
            if len(jobs) == 1:
                flat = jobs[0].payload.inputs[spec.name].data
            else:
                flat = list(itertools.chain.from_iterable(job.payload.inputs[spec.name].data for job in jobs))
            tensors.append(_to_tensor(flat, spec.datatype).reshape(rows, *spec.shape[1:]).to(self.device))
        with torch.inference_mode():
            result = self.model(*tensors)
        produced = result if isinstance(result, tuple | list) else (result,)
        if len(produced) != len(self.outputs):
            raise RuntimeError(f"the model returned {len(produced)} tensors; its metadata lists {len(self.outputs)}")
        per_output = []
        for spec, tensor in zip(self.outputs, produced, strict=True):
            tensor = tensor.detach().to("cpu")
            width = tensor[0].numel() if rows else 0
            per_output.append((spec, list(tensor.shape[1:]), width, tensor.reshape(-1).tolist()))
        self.metrics.inference.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(rows)

        answers = []
        offset = 0
        for job in jobs:
            wanted = job.payload.outputs
            answer = []
            for spec, tail, width, values in per_output:
                if spec.name in wanted:
                    answer.append((spec, [job.rows, *tail], values[offset * width : (offset + job.rows) * width]))
            answers.append(answer)
            offset += job.rows
        return answers

    # --- the route -----------------------------------------------------------------------------------

    async def _infer(self, scope: Scope, receive: Receive, send: Send) -> int:
        settings = self.settings
        if not self.ready or self.batcher is None:
            return await self.refuse_not_ready(send)
        request = await self.read_request(
            scope,
            receive,
            send,
            lambda body: parse_infer_request(body, self.inputs, self.outputs, settings.max_batch_size),
        )
        if isinstance(request, int):
            return request
        rows = next(iter(request.inputs.values())).shape[0]
        try:
            future = self.batcher.submit(request, rows)
        except QueueFull:
            self.metrics.rejected.labels("queue_full").inc()
            await respond_error(
                send,
                503,
                f"the server is at capacity ({settings.max_queue} requests queued); retry shortly",
                NOT_READY_HEADERS,
            )
            return 503

        def gone() -> None:
            if not future.done():
                future.set_exception(ClientGone())

        def expire() -> None:
            if not future.done():
                future.set_exception(RequestTimeout())

        watcher = watch_disconnect(receive, gone)
        timer = asyncio.get_running_loop().call_later(settings.request_timeout_s, expire)
        self.metrics.inflight.inc()
        try:
            outputs = await future
        except ClientGone:
            self.metrics.rejected.labels("client_gone").inc()
            return 499
        except RequestTimeout:
            self.metrics.rejected.labels("timeout").inc()
            await respond_error(send, 504, f"no answer within {settings.request_timeout_s:g} s")
            return 504
        except Exception as exc:
            log.exception("inference failed")
            await respond_error(send, 500, f"inference failed: {type(exc).__name__}: {exc}")
            return 500
        finally:
            self.metrics.inflight.dec()
            timer.cancel()
            watcher.cancel()
        await respond(send, 200, infer_response(settings.model_name, settings.model_version, request.id, outputs))
        return 200


#: array typecodes per datatype: array(...) converts a list of numbers in C, three times faster than
#: torch.tensor(list), and torch.frombuffer then wraps it without a copy.
_ARRAY_CODES = {
    "FP16": "f",
    "FP32": "f",
    "FP64": "d",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "BOOL": "B",
}


def _to_tensor(values: list[Any], datatype: str) -> torch.Tensor:
    import torch

    dtype = getattr(torch, _DTYPES[datatype])
    if not values:
        return torch.empty(0, dtype=dtype)
    buffer = array.array(_ARRAY_CODES[datatype], values)
    tensor = torch.frombuffer(buffer, dtype=getattr(torch, _DTYPES[datatype.replace("FP16", "FP32")]))
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def _tensor(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def create_predict_app(
    *,
    load: Loader,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    model_name: str = "model",
    settings: Settings | None = None,
    on_load_failure: Callable[[], None] = exit_process,
) -> PredictApp:
    """An ASGI app serving ``load``'s model over the Open Inference Protocol, with dynamic batching.

    Args:
        load: ``load(weights_path, device)`` returns the model, in eval mode, on ``device``. The model
            takes one tensor per input spec (first dimension: rows) and returns one tensor per output
            spec (or a single tensor), each with the same number of rows.
        inputs: The model's inputs, in the order the model takes them.
        outputs: The model's outputs, in the order it returns them.
        model_name: The name clients use in ``/v2/models/{name}`` (``SERVING_MODEL_NAME`` overrides it).
        settings: Explicit settings; default: ``Settings.from_env(model_name=model_name)``.
        on_load_failure: Called when the model cannot load (default: exit the process with status 3).
    """
    if settings is None:
        settings = settings_or_exit(model_name=model_name)
    return PredictApp(load, inputs, outputs, settings, on_load_failure=on_load_failure)


def settings_or_exit(**defaults: Any) -> Settings:
    """Settings from the environment; a bad variable stops the process with one clear log line."""
    from mlctl_serve.settings import SettingsError

    try:
        return Settings.from_env(**defaults)
    except SettingsError as exc:
        logging.basicConfig(level=logging.INFO)
        log.error("invalid settings: %s", exc)
        raise SystemExit(2) from None
