"""Small models and apps for the runtime's tests (also served by subprocesses: ``serving_apps:slow_app``)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import torch
from mlctl_serve import Settings, TensorSpec, create_generate_app, create_predict_app

X = TensorSpec("x", "FP32", (-1, 4))
Y = TensorSpec("y", "FP32", (-1, 4))


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
