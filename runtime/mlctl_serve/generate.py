"""``create_generate_app``: streaming text generation over the generate extension of the Open
Inference Protocol (as Triton and KServe serve it):

* ``POST /v2/models/{name}/generate``: ``{"text_input": "...", "parameters": {...}}`` ->
  ``{"text_output": "...", "finish_reason": "stop" | "length"}``
* ``POST /v2/models/{name}/generate_stream``: the same request; the answer is server-sent events,
  one ``data: {"text_output": "..."}`` per piece of text, the last one carrying ``finish_reason``.

Parameters: ``max_tokens``, ``temperature`` (0 = greedy, and so is anything below 0.001), ``stop``
(strings that end the text and are not part of it) and ``seed``. At most ``max_concurrency``
generations run at once, each on a thread of its own; up to ``max_queue`` more wait for a slot (or are
being read), and beyond that the answer is 503, decided before the body is read. A client that
disconnects stops its generation at the next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from mlctl_serve.app import (
    ADMITTED,
    SHUTTING_DOWN,
    ServingApp,
    compile_module,
    exit_process,
    select_device,
    warn_compile_fallback,
)
from mlctl_serve.http import (
    Receive,
    Scope,
    Send,
    error_headers,
    request_id,
    respond,
    respond_error,
    watch_disconnect,
)
from mlctl_serve.protocol import GenerateRequest, InvalidInput, parse_generate_request
from mlctl_serve.settings import Settings

if TYPE_CHECKING:
    import torch

log = logging.getLogger("mlctl_serve")
_END = object()
SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class TextGenerator(Protocol):
    """What a generate service's ``load`` returns."""

    def tokens(self, prompt: str, *, temperature: float, seed: int | None) -> Iterator[str]:
        """Yield the text that follows ``prompt``, one token at a time, for as long as asked.

        The runtime has checked the parameters: ``temperature`` is 0 (greedy) or from 0.001 to 5, and
        ``seed`` from 0 to 2**63 - 1 or None. Raise ``InvalidInput`` for a prompt the model cannot take
        (a 400 with its message); any other exception is a 500 with a request id.
        """
        ...


Loader = Callable[[str, "torch.device"], TextGenerator]


class GenerateApp(ServingApp):
    def __init__(
        self,
        load: Loader,
        settings: Settings,
        *,
        default_max_tokens: int,
        max_tokens_limit: int,
        on_load_failure: Callable[[], None] = exit_process,
    ) -> None:
        super().__init__(settings, on_load_failure=on_load_failure)
        self.loader = load
        self.default_max_tokens = default_max_tokens
        self.max_tokens_limit = max_tokens_limit
        self.generator: TextGenerator | None = None
        self.pool = ThreadPoolExecutor(max_workers=settings.max_concurrency, thread_name_prefix="generate")
        self.slots: asyncio.Semaphore | None = None
        #: Requests waiting for a slot.
        self.waiting = 0
        #: Requests admitted and not yet answered (being read, waiting or generating).
        self.admitted = 0
        self._full = (
            f"the server is at capacity ({settings.max_concurrency} generating, {settings.max_queue} waiting); "
            "retry shortly"
        )
        self._metadata = orjson.dumps(
            {
                "name": settings.model_name,
                "versions": [settings.model_version],
                "platform": "pytorch",
                "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1]}],
                "outputs": [{"name": "text_output", "datatype": "BYTES", "shape": [-1]}],
            }
        )
        self.add_model_route("generate", ("POST",), self._generate)
        self.add_model_route("generate_stream", ("POST",), self._generate_stream)
        self._generate_targets = self.model_targets("generate") | self.model_targets("generate_stream")

    def fast_refusal(self, method: bytes, target: bytes, scope: Scope) -> bytes | None:
        settings = self.settings
        if self.slots is None or not self.ready or method != b"POST":
            return None
        path = target.split(b"?", 1)[0]
        if path not in self._generate_targets:
            return None
        if self.admitted < settings.max_concurrency + settings.max_queue:
            self.admitted += 1
            scope[ADMITTED] = True
            return None
        endpoint = "/v2/models/{name}/generate_stream" if path.endswith(b"_stream") else "/v2/models/{name}/generate"
        return self.refusal_bytes(self._full, scope, endpoint)

    def metadata(self) -> bytes:
        return self._metadata

    def extensions(self) -> list[str]:
        return ["generate"]

    def load(self) -> None:
        device = select_device(self.settings.device)
        self.device_type = device.type
        generator = self.loader(self.settings.model_path, device)
        module = getattr(generator, "model", None)
        if self.settings.compile and module is not None:
            try:
                generator.model = compile_module(module, self.settings.compile_mode)  # type: ignore[attr-defined]
                self._warm_up(generator)
            except Exception as exc:
                warn_compile_fallback(exc)
                generator.model = module  # type: ignore[attr-defined]
                self._warm_up(generator)
        else:
            if self.settings.compile:
                log.warning("torch.compile asked for, but the generator has no .model to compile; serving it eager")
            self._warm_up(generator)
        self.generator = generator

    def _warm_up(self, generator: TextGenerator) -> None:
        for _, _token in zip(range(8), generator.tokens("warm-up", temperature=1.0, seed=0), strict=False):
            pass

    async def on_startup(self) -> None:
        self.slots = asyncio.Semaphore(self.settings.max_concurrency)

    async def on_shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    # --- routes --------------------------------------------------------------------------------------

    async def _generate(self, scope: Scope, receive: Receive, send: Send) -> int:
        return await self._serve(scope, receive, send, stream=False)

    async def _generate_stream(self, scope: Scope, receive: Receive, send: Send) -> int:
        return await self._serve(scope, receive, send, stream=True)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, *, stream: bool) -> int:
        settings = self.settings
        if not scope.get(ADMITTED):  # else our protocol admitted it on its head already
            if not self.ready or self.slots is None:
                return await self.refuse_not_ready(send, scope)
            # Admission before the body is read or parsed: generating, waiting and being read all count.
            if self.admitted >= settings.max_concurrency + settings.max_queue:
                return await self.refuse_at_capacity(send, self._full, scope)
            self.admitted += 1
        try:
            try:
                read = await self.read_request(
                    scope,
                    receive,
                    send,
                    lambda body: parse_generate_request(
                        body, max_tokens_limit=self.max_tokens_limit, default_max_tokens=self.default_max_tokens
                    ),
                )
            except asyncio.CancelledError:
                return await self.answer_shutdown(send, scope)
            if isinstance(read, int):
                return read
            request, body = read
            try:
                return await self._generate_one(request, scope, stream, receive, send)
            finally:
                body.close()
        finally:
            self.admitted -= 1

    async def _generate_one(
        self, request: GenerateRequest, scope: Scope, stream: bool, receive: Receive, send: Send
    ) -> int:
        assert self.slots is not None
        cancel = threading.Event()
        gone = asyncio.Event()

        def on_gone() -> None:
            cancel.set()
            gone.set()

        watcher = watch_disconnect(scope, receive, on_gone)
        try:
            try:
                status = await self._wait_for_slot(gone, send, scope)
            except asyncio.CancelledError:
                return await self.answer_shutdown(send, scope)
            if status is not None:
                return status
            try:
                if stream:
                    return await self._stream(request, scope, cancel, gone, send)
                return await self._whole(request, scope, cancel, gone, send)
            finally:
                self.slots.release()
        finally:
            cancel.set()
            if watcher is not None:
                watcher.cancel()

    async def _wait_for_slot(self, gone: asyncio.Event, send: Send, scope: Scope) -> int | None:
        """Take a generation slot; a status when the request ends here instead (timeout, client gone)."""
        assert self.slots is not None
        if not self.slots.locked():
            await self.slots.acquire()
            return None
        self.waiting += 1
        self.metrics.queue_depth.set(self.waiting)
        acquire = asyncio.ensure_future(self.slots.acquire())
        left = asyncio.ensure_future(gone.wait())
        try:
            done, _ = await asyncio.wait(
                {acquire, left}, timeout=self.settings.request_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:
            acquire.cancel()
            raise
        finally:
            self.waiting -= 1
            self.metrics.queue_depth.set(self.waiting)
            left.cancel()
        if acquire in done:
            return None
        acquire.cancel()
        if acquire.done() and not acquire.cancelled():
            self.slots.release()  # acquired in the same instant it was abandoned
        if gone.is_set():
            self.metrics.reject("client_gone")
            return 499
        self.metrics.reject("timeout")
        message = f"no generation slot free within {self.settings.request_timeout_s:g} s"
        await respond_error(send, 504, message, error_headers(scope))
        return 504

    async def _whole(
        self, request: GenerateRequest, scope: Scope, cancel: threading.Event, gone: asyncio.Event, send: Send
    ) -> int:
        pieces: list[str] = []
        reason = "length"

        async def collect() -> None:
            nonlocal reason
            async for piece, finish in self._pieces(request, cancel):
                pieces.append(piece)
                if finish:
                    reason = finish

        try:
            await asyncio.wait_for(collect(), self.settings.request_timeout_s)
        except asyncio.TimeoutError:
            cancel.set()
            self.metrics.reject("timeout")
            message = f"no answer within {self.settings.request_timeout_s:g} s"
            await respond_error(send, 504, message, error_headers(scope))
            return 504
        except asyncio.CancelledError:
            cancel.set()
            return await self.answer_shutdown(send, scope)
        except InvalidInput as exc:
            await respond_error(send, 400, f"the model cannot take this input: {exc}", error_headers(scope))
            return 400
        except Exception as exc:
            return await self.answer_server_error(send, scope, "generation failed", exc)
        if gone.is_set():
            return 499
        body: dict[str, Any] = {
            "model_name": self.settings.model_name,
            "model_version": self.settings.model_version,
            "text_output": "".join(pieces),
            "finish_reason": reason,
        }
        if request.id is not None:
            body["id"] = request.id
        await respond(send, 200, orjson.dumps(body))
        return 200

    async def _stream(
        self, request: GenerateRequest, scope: Scope, cancel: threading.Event, gone: asyncio.Event, send: Send
    ) -> int:
        # A stream's errors come after its 200: its request id is in its headers from the start.
        rid = request_id(scope)
        await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, (b"x-request-id", rid)]})
        base = {"model_name": self.settings.model_name, "model_version": self.settings.model_version}
        if request.id is not None:
            base["id"] = request.id
        failure: dict[str, Any] | None = None
        try:
            async for piece, finish in self._pieces(request, cancel):
                if gone.is_set():
                    return 499
                event = {**base, "text_output": piece}
                if finish:
                    event["finish_reason"] = finish
                await send({"type": "http.response.body", "body": _sse(event), "more_body": True})
        except asyncio.CancelledError:
            cancel.set()
            log.warning("request %s: still streaming when the shutdown grace ended; stream ended", rid.decode())
            failure = {"error": SHUTTING_DOWN}
        except InvalidInput as exc:
            failure = {"error": f"the model cannot take this input: {exc}"}
        except Exception as exc:
            log.error("request %s: generation failed", rid.decode(), exc_info=exc)
            failure = {"error": f"internal server error (request id {rid.decode()})"}
        if failure is not None:
            # The status line (200) is long gone: the error is the stream's last event.
            await send({"type": "http.response.body", "body": _sse(failure), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        if failure is not None:
            return 500
        return 499 if gone.is_set() else 200

    async def _pieces(self, request: GenerateRequest, cancel: threading.Event) -> AsyncIterator[tuple[str, str | None]]:
        """Text as it may be shown: stop sequences cut, text that may begin one held back.

        Yields ``(text, finish_reason)``; the last item carries the reason ("stop" or "length").
        """
        assert self.generator is not None
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        started = time.perf_counter()
        loop.run_in_executor(self.pool, self._produce, request, cancel, queue, loop)
        self.metrics.inflight.inc()
        text, sent, count, first = "", 0, 0, True
        stops = request.stop
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    yield text[sent:], "stop" if count < request.max_tokens else "length"
                    return
                if isinstance(item, BaseException):
                    raise item
                count += 1
                text += item
                if first:
                    self.metrics.first_token.observe(time.perf_counter() - started)
                    first = False
                hit = min((i for i in (text.find(s, max(0, sent - len(s))) for s in stops) if i >= 0), default=-1)
                if hit >= 0:
                    cancel.set()
                    yield text[sent:hit], "stop"
                    return
                if count >= request.max_tokens:
                    cancel.set()
                    yield text[sent:], "length"
                    return
                safe = len(text) - _holdback(text, stops)
                if safe > sent:
                    yield text[sent:safe], None
                    sent = safe
        finally:
            cancel.set()
            self.metrics.inflight.dec()
            self.metrics.tokens.inc(count)
            self.metrics.inference.observe(time.perf_counter() - started)

    def _produce(
        self,
        request: GenerateRequest,
        cancel: threading.Event,
        queue: asyncio.Queue[Any],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        assert self.generator is not None
        item: Any = _END
        try:
            tokens = self.generator.tokens(request.text, temperature=request.temperature, seed=request.seed)
            for produced, token in enumerate(tokens, start=1):
                if cancel.is_set():
                    break
                loop.call_soon_threadsafe(queue.put_nowait, token)
                if produced >= request.max_tokens:
                    break
        except Exception as exc:
            item = exc
        # RuntimeError: the event loop closed under us (shutdown), so nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, item)


def _holdback(text: str, stops: tuple[str, ...]) -> int:
    """How many characters at the end of ``text`` could be the start of a stop sequence."""
    longest = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:k]):
                longest = k
                break
    return longest


def _sse(event: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"


def create_generate_app(
    *,
    load: Loader,
    model_name: str = "model",
    default_max_tokens: int = 64,
    max_tokens_limit: int = 2048,
    settings: Settings | None = None,
    on_load_failure: Callable[[], None] = exit_process,
) -> GenerateApp:
    """An ASGI app serving text generation over the OIP generate extension.

    Args:
        load: ``load(weights_path, device)`` returns a TextGenerator (see its ``tokens`` method).
        model_name: The name clients use in ``/v2/models/{name}`` (``SERVING_MODEL_NAME`` overrides it).
        default_max_tokens: ``max_tokens`` when a request gives none.
        max_tokens_limit: The most tokens one request may ask for.
        settings: Explicit settings; default: from ``SERVING_*`` variables.
        on_load_failure: Called when the model cannot load (default: exit the process with status 3).
    """
    if settings is None:
        from mlctl_serve.predict import settings_or_exit

        settings = settings_or_exit(model_name=model_name)
    return GenerateApp(
        load,
        settings,
        default_max_tokens=default_max_tokens,
        max_tokens_limit=max_tokens_limit,
        on_load_failure=on_load_failure,
    )
