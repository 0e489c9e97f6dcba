"""Small models and apps for the runtime's tests (also served by subprocesses: ``serving_apps:slow_app``),
and the helpers the runtime's tests share."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future

import torch
from mlctl_serve import Settings, TensorSpec, create_generate_app, create_predict_app
from mlctl_serve.testing import LiveServer, Response
from prometheus_client.parser import text_string_to_metric_families

X = TensorSpec("x", "FP32", (-1, 4))
Y = TensorSpec("y", "FP32", (-1, 4))
INFER = "/v2/models/doubler/infer"


def request(rows: list[list[float]], **extra: object) -> dict[str, object]:
    """An infer request for the doubler: one FP32 tensor ``x`` of ``rows``."""
    return {"inputs": [{"name": "x", "shape": [len(rows), 4], "datatype": "FP32", "data": rows}], **extra}


def metric(server: LiveServer, name: str, **labels: str) -> float:
    """A sample of the server's /metrics (0 when absent)."""
    for family in text_string_to_metric_families(server.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def in_the_model(server: LiveServer, count: int) -> bool:
    """``count`` requests are waiting for answers and none is queued: they are in the model."""
    return metric(server, "mlserve_inflight_requests") == count and metric(server, "mlserve_queue_depth") == 0


def fill_up(server: LiveServer, pool: Executor, queued: int) -> list[Future[Response]]:
    """With the model held (a gated Doubler, batches of one): one request in the model, then ``queued``
    more in the queue, sent one at a time (a request being read holds its queue slot already)."""
    held = [pool.submit(server.post_json, INFER, request([[1, 1, 1, 1]]))]
    wait_until(lambda: in_the_model(server, 1))
    for depth in range(1, queued + 1):
        held.append(pool.submit(server.post_json, INFER, request([[1, 1, 1, 1]])))
        wait_until(lambda depth=depth: metric(server, "mlserve_queue_depth") == depth)  # type: ignore[misc]
    return held


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


class Doubler(torch.nn.Module):
    """y = 2x, optionally slow, optionally gated; records the rows of every batch it runs."""

    def __init__(self, delay_s: float = 0.0, gate: threading.Event | None = None) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.gate = gate
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            self.gate.wait(30)
        if self.delay_s:
            time.sleep(self.delay_s)
        self.batches.append(int(x.shape[0]))
        return x * 2


def doubler_app(model: Doubler, **settings: object) -> object:
    base: dict[str, object] = {"model_name": "doubler", "device": "cpu"}
    base.update(settings)
    return create_predict_app(
        load=lambda path, device: model,
        inputs=[X],
        outputs=[Y],
        settings=Settings(**base),  # type: ignore[arg-type]
        on_load_failure=lambda: None,
    )


def _slow_load(path: str, device: torch.device) -> Doubler:
    return Doubler(float(os.environ.get("TEST_MODEL_DELAY_S", "0.05")))


#: For subprocess tests: ``python -m mlctl_serve serving_apps:slow_app`` with SERVING_* in the environment.
slow_app = create_predict_app(load=_slow_load, inputs=[X], outputs=[Y], model_name="slow")


class Letters:
    """A generator that spells ``text`` over and over, one character per token, optionally slowly."""

    def __init__(self, text: str = "abcdefghij", delay_s: float = 0.0) -> None:
        self.text = text
        self.delay_s = delay_s
        self.started = 0
        self.produced = 0

    def tokens(self, prompt: str, *, temperature: float, seed: int | None) -> Iterator[str]:
        self.started += 1
        i = 0
        while True:
            if self.delay_s:
                time.sleep(self.delay_s)
            self.produced += 1
            yield self.text[i % len(self.text)]
            i += 1


def letters_app(generator: Letters, **settings: object) -> object:
    base: dict[str, object] = {"model_name": "letters", "device": "cpu"}
    base.update(settings)
    return create_generate_app(
        load=lambda path, device: generator,
        settings=Settings(**base),  # type: ignore[arg-type]
        on_load_failure=lambda: None,
        max_tokens_limit=500,
    )
