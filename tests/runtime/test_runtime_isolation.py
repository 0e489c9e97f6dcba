"""Requests fail alone: a bad request in a batch, outputs that do not match, errors that say nothing
they should not, and admission decided before a body is read."""

from __future__ import annotations

import json
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from mlctl_serve import InvalidInput, Settings, TensorSpec, create_predict_app
from mlctl_serve.testing import LiveServer, Response
from serving_apps import INFER, Doubler, doubler_app, fill_up, in_the_model, metric, request, wait_until

IDS = TensorSpec("ids", "INT64", (-1, 1))
VECTOR = TensorSpec("vector", "FP32", (-1, 2))
LOOKUP = "/v2/models/lookup/infer"


class Lookup(torch.nn.Module):
    """An embedding of 10 entries (row i is [i, -i]), gated so a test can line requests up in one batch."""

    def __init__(self, *, signal: bool = False) -> None:
        super().__init__()
        self.table = torch.nn.Embedding(10, 2)
        with torch.no_grad():
            self.table.weight.copy_(torch.tensor([[float(i), -float(i)] for i in range(10)]))
        self.signal = signal
        self.gate = threading.Event()
        self.gate.set()
        self.batches: list[list[int]] = []

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self.gate.wait(30)
        self.batches.append(ids.reshape(-1).tolist())
        if self.signal and bool((ids >= 10).any()):
            raise InvalidInput(f"token id {int(ids.max())} is beyond the vocabulary of 10")
        return self.table(ids).reshape(ids.shape[0], 2)  # IndexError for an id >= 10


def lookup_app(model: Lookup, **settings: object) -> object:
    base: dict[str, object] = {"model_name": "lookup", "device": "cpu", "max_batch_size": 16}
    base.update(settings)
    return create_predict_app(
        load=lambda path, device: model,
        inputs=[IDS],
        outputs=[VECTOR],
        settings=Settings(**base),  # type: ignore[arg-type]
        on_load_failure=lambda: None,
    )


def ids_request(token: int, rid: str) -> dict[str, object]:
    return {"id": rid, "inputs": [{"name": "ids", "shape": [1, 1], "datatype": "INT64", "data": [token]}]}


def one_batch(server: LiveServer, model: Lookup, tokens: list[int]) -> list[Response]:
    """Send ``tokens`` (one request each) while the model is held, so they queue and run as one batch."""
    model.gate.clear()
    with ThreadPoolExecutor(len(tokens) + 1) as pool:
        holder = pool.submit(server.post_json, LOOKUP, ids_request(0, "holder"))
        # In the model (not just queued): the others then queue behind it and run as one batch.
        wait_until(lambda: in_the_model(server, 1))
        futures = [pool.submit(server.post_json, LOOKUP, ids_request(t, f"r{i}")) for i, t in enumerate(tokens)]
        wait_until(lambda: metric(server, "mlserve_queue_depth") == len(tokens))
        model.batches.clear()
        model.gate.set()
        assert holder.result().status == 200
        answers = [f.result() for f in futures]
    assert model.batches[0] == [0]  # the held one, then all the others together (in arrival order)
    assert sorted(model.batches[1]) == sorted(tokens)
    return answers


def test_one_bad_request_fails_alone_and_its_neighbours_get_their_own_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = Lookup()
    tokens = [1, 2, 3, 4, 99, 5, 6, 7, 8]  # 99 is beyond the vocabulary: the embedding raises IndexError
    with caplog.at_level(logging.ERROR, logger="mlctl_serve"), LiveServer(lookup_app(model)) as server:
        server.wait_ready()
        answers = one_batch(server, model, tokens)
        splits = metric(server, "mlserve_batch_splits_total")
    for i, (token, answer) in enumerate(zip(tokens, answers, strict=True)):
        if token == 99:
            continue
        assert answer.status == 200, answer.text
        body = answer.json()
        assert body["id"] == f"r{i}"
        assert body["outputs"][0]["data"] == [float(token), -float(token)]
    bad = answers[4]
    assert bad.status == 500
    rid = bad.headers["x-request-id"]
    assert bad.json() == {"error": f"internal server error (request id {rid})"}
    assert "index" not in bad.text.lower()  # the exception text stays in the log
    assert f"request {rid}: inference failed" in caplog.text
    assert "IndexError: index out of range in self" in caplog.text
    assert splits >= 3


def test_a_model_that_signals_invalid_input_gets_400_for_that_request_alone() -> None:
    model = Lookup(signal=True)
    tokens = [1, 12, 3, 4]
    with LiveServer(lookup_app(model)) as server:
        server.wait_ready()
        answers = one_batch(server, model, tokens)
    assert [a.status for a in answers] == [200, 400, 200, 200]
    assert answers[1].json() == {
        "error": "the model cannot take this input: token id 12 is beyond the vocabulary of 10"
    }
    assert [a.json()["outputs"][0]["data"] for a in answers if a.status == 200] == [
        [1.0, -1.0],
        [3.0, -3.0],
        [4.0, -4.0],
    ]


class Wrong(torch.nn.Module):
    """Returns an output that does not match its spec, the way ``kind`` says."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> object:
        if self.kind == "rows":
            return (x * 2)[:-1] if x.shape[0] > 1 else torch.cat([x, x])
        if self.kind == "dtype":
            return (x * 2).double()
        if self.kind == "width":
            return torch.cat([x, x], dim=1)
        if self.kind == "nan":
            return x / 0 * 0
        if self.kind == "count":
            return (x, x)
        return "not a tensor"


@pytest.mark.parametrize(
    ("kind", "logged"),
    [
        ("rows", "output 'y': expected shape [1, 4] for a batch of 1, got [2, 4]"),
        ("dtype", "output 'y': expected FP32 (torch.float32), got torch.float64"),
        ("width", "output 'y': expected shape [1, 4] for a batch of 1, got [1, 8]"),
        ("nan", "output 'y': holds NaN or infinity, which JSON cannot carry"),
        ("count", "the model returned 2 tensors; its output specs list 1"),
        ("str", "output 'y': expected a tensor, got str"),
    ],
)
def test_outputs_that_do_not_match_are_a_logged_server_error_never_a_200(
    kind: str, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = doubler_app(Wrong(kind))  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="mlctl_serve"), LiveServer(app) as server:
        server.wait_ready()
        answer = server.post_json(INFER, request([[1, 2, 3, 4]]), headers={"X-Request-Id": "trace-42"})
    assert answer.status == 500
    assert answer.headers["x-request-id"] == "trace-42"
    assert answer.json() == {"error": "internal server error (request id trace-42)"}
    assert "request trace-42: inference failed" in caplog.text
    assert logged in caplog.text


def test_errors_carry_the_clients_request_id_or_one_of_ours() -> None:
    with LiveServer(doubler_app(Doubler())) as server:
        server.wait_ready()
        mine = server.post_json(INFER, {"inputs": []}, headers={"X-Request-Id": "abc-123"})
        unsafe = server.post_json(INFER, {"inputs": []}, headers={"X-Request-Id": "a b<script>"})
        ours = server.post_json(INFER, {"inputs": []})
        fine = server.post_json(INFER, request([[1, 2, 3, 4]]), headers={"X-Request-Id": "abc-124"})
    assert (mine.status, mine.headers["x-request-id"]) == (400, "abc-123")
    assert len(unsafe.headers["x-request-id"]) == 16
    assert unsafe.headers["x-request-id"] != "a b<script>"
    assert len(ours.headers["x-request-id"]) == 16
    assert fine.status == 200
    assert "x-request-id" not in fine.headers  # a 200 needs no tracing, and does not pay for it


def test_admission_is_decided_before_the_body_is_read() -> None:
    """With the queue full, a request is refused on its headers alone: its body never has to arrive."""
    gate = threading.Event()
    model = Doubler(gate=gate)
    with LiveServer(doubler_app(model, max_batch_size=1, max_queue=1)) as server:
        gate.set()
        server.wait_ready()
        gate.clear()
        with ThreadPoolExecutor(2) as pool:
            held = fill_up(server, pool, 1)  # the queue of one is full
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                # Headers only: a body of 100 kB is announced and never sent.
                sock.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
                reply = sock.recv(4096)
            gate.set()
            assert [f.result().status for f in held] == [200, 200]
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ")
    assert b"retry-after: 1" in head.lower()
    assert json.loads(body) == {"error": "the server is at capacity (1 requests queued or being read); retry shortly"}


def test_fp32_overflow_is_a_400_naming_the_value() -> None:
    with LiveServer(doubler_app(Doubler())) as server:
        server.wait_ready()
        answer = server.post_json(INFER, request([[1, 2, 3e39, 4]]))
    assert answer.status == 400
    assert answer.json() == {
        "error": "inputs[0].data[2]: 3e+39 is out of range for FP32 (largest magnitude 3.40282e+38)"
    }
