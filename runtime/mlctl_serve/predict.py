"""``create_predict_app``: the Open Inference Protocol inference API with dynamic batching."""

from __future__ import annotations

import array
import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from mlctl_serve.app import (
    ADMITTED,
    ServingApp,
    compile_module,
    exit_process,
    select_device,
    warn_compile_fallback,
)
from mlctl_serve.batching import Batcher, Job, ShuttingDown
from mlctl_serve.http import (
    ClientGone,
    Receive,
    Scope,
    Send,
    error_headers,
    respond,
    respond_error,
    watch_disconnect,
)
from mlctl_serve.parsing import ParserProcess
from mlctl_serve.protocol import (
    ARRAY_CODES,
    InferRequest,
    InvalidInput,
    TensorSpec,
    infer_response,
    parse_infer_request,
)
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


class OutputMismatch(RuntimeError):
    """The model's outputs do not match its output specs or the batch it was given."""


Answer = list[tuple[TensorSpec, list[int], list[Any]]]


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
        self._full = f"the server is at capacity ({settings.max_queue} requests queued or being read); retry shortly"
        self.add_model_route("infer", ("POST",), self._infer)
        self._infer_targets = self.model_targets("infer")
        #: Large bodies are parsed here, off the event loop (started at the first one).
        self.parser = ParserProcess(self.inputs, self.outputs, settings.max_batch_size)

    def metadata(self) -> bytes:
        return self._metadata

    def fast_refusal(self, method: bytes, target: bytes, scope: Scope) -> bytes | None:
        batcher = self.batcher
        if batcher is None or not self.ready or method != b"POST":
            return None
        if target.split(b"?", 1)[0] not in self._infer_targets:
            return None
        if batcher.reserve():
            scope[ADMITTED] = True
            return None
        return self.refusal_bytes(self._full, scope, "/v2/models/{name}/infer")

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
            metrics=self.metrics,
        )

    def on_loaded(self) -> None:
        # Runs on the event loop once the model is ready: the model thread now takes batches.
        assert self.batcher is not None
        self.batcher.start(self.executor)

    async def on_shutdown(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()
        self.parser.close()

    # --- the model thread ----------------------------------------------------------------------------

    def _run_batch(self, jobs: Sequence[Job[InferRequest]]) -> list[Answer]:
        import torch

        started = time.perf_counter()
        rows = sum(job.rows for job in jobs)
        # The inputs are made inside inference mode too, as the warm-up's are: a compiled model guards
        # on it, and inputs made outside recompiled it on the first request (found by gpu_check.py).
        with torch.inference_mode():
            tensors = []
            for spec in self.inputs:
                if len(jobs) == 1:
                    values = jobs[0].payload.inputs[spec.name].data
                else:
                    values = array.array(ARRAY_CODES[spec.datatype])
                    for job in jobs:
                        values.extend(job.payload.inputs[spec.name].data)
                tensors.append(_to_tensor(values, spec.datatype).reshape(rows, *spec.shape[1:]).to(self.device))
            result = self.model(*tensors)
        produced = result if isinstance(result, tuple | list) else (result,)
        if len(produced) != len(self.outputs):
            raise OutputMismatch(
                f"the model returned {len(produced)} tensors; its output specs list {len(self.outputs)}"
            )
        per_output = []
        for spec, tensor in zip(self.outputs, produced, strict=True):
            _check_output(spec, tensor, rows)
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
        batcher = self.batcher
        if not self.ready or batcher is None:
            return await self.refuse_not_ready(send, scope)
        # Admission before the body is read or parsed (by our protocol, before this task was even made).
        if not scope.get(ADMITTED) and not batcher.reserve():
            return await self.refuse_at_capacity(send, self._full, scope)
        submitted = False
        try:
            read = await self.read_request(
                scope,
                receive,
                send,
                lambda body: parse_infer_request(body, self.inputs, self.outputs, settings.max_batch_size),
                self.parser.parse,
            )
            if isinstance(read, int):
                return read
            request, body = read
            try:
                future = batcher.submit(request, next(iter(request.inputs.values())).shape[0], reserved=True)
            except ShuttingDown:
                body.close()
                raise
            submitted = True
        except (ShuttingDown, asyncio.CancelledError):
            return await self.answer_shutdown(send, scope)
        finally:
            if not submitted:
                batcher.release()

        def gone() -> None:
            if not future.done():
                future.set_exception(ClientGone())

        def expire() -> None:
            if not future.done():
                future.set_exception(RequestTimeout())

        watcher = watch_disconnect(scope, receive, gone)
        timer = asyncio.get_running_loop().call_later(settings.request_timeout_s, expire)
        self.metrics.inflight.inc()
        try:
            outputs = await future
        except ClientGone:
            self.metrics.reject("client_gone")
            return 499
        except RequestTimeout:
            self.metrics.reject("timeout")
            message = f"no answer within {settings.request_timeout_s:g} s"
            await respond_error(send, 504, message, error_headers(scope))
            return 504
        except InvalidInput as exc:
            message = f"the model cannot take this input: {exc}"
            await respond_error(send, 400, message, error_headers(scope))
            return 400
        except (ShuttingDown, asyncio.CancelledError):
            return await self.answer_shutdown(send, scope)
        except Exception as exc:
            return await self.answer_server_error(send, scope, "inference failed", exc)
        finally:
            self.metrics.inflight.dec()
            timer.cancel()
            if watcher is not None:
                watcher.cancel()
            body.close()
        await respond(send, 200, infer_response(settings.model_name, settings.model_version, request.id, outputs))
        return 200


def _check_output(spec: TensorSpec, tensor: Any, rows: int) -> None:
    """One output tensor against its spec and the batch: a mismatch is the model's bug, never a 200."""
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise OutputMismatch(f"output {spec.name!r}: expected a tensor, got {type(tensor).__name__}")
    want = getattr(torch, _DTYPES[spec.datatype])
    if tensor.dtype != want:
        raise OutputMismatch(f"output {spec.name!r}: expected {spec.datatype} ({want}), got {tensor.dtype}")
    shape = tuple(tensor.shape)
    if len(shape) != len(spec.shape) or shape[0] != rows or shape[1:] != spec.shape[1:]:
        expected = [rows, *spec.shape[1:]]
        raise OutputMismatch(
            f"output {spec.name!r}: expected shape {expected} for a batch of {rows}, got {list(shape)}"
        )
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise OutputMismatch(f"output {spec.name!r}: holds NaN or infinity, which JSON cannot carry")


def _to_tensor(values: array.array[Any], datatype: str) -> torch.Tensor:
    """A typed array -> a tensor of the datatype, without copying where the types agree."""
    import torch

    dtype = getattr(torch, _DTYPES[datatype])
    if not values:
        return torch.empty(0, dtype=dtype)
    tensor = torch.frombuffer(values, dtype=getattr(torch, _DTYPES[datatype.replace("FP16", "FP32")]))
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
