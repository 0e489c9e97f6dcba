"""The generate server for real: stop sequences, streaming, the concurrency limit, cancellation."""

from __future__ import annotations

import json
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from mlctl_serve import InvalidInput
from mlctl_serve.testing import LiveServer
from serving_apps import Letters, letters_app

GENERATE = "/v2/models/letters/generate"
STREAM = "/v2/models/letters/generate_stream"


def ask(server: LiveServer, path: str, **parameters: object):  # type: ignore[no-untyped-def]
    return server.post_json(path, {"text_input": "x", "parameters": parameters})


def events(text: str) -> list[dict]:
    return [json.loads(block[len("data: ") :]) for block in text.split("\n\n") if block]


def test_stop_sequences_are_cut_even_across_tokens() -> None:
    with LiveServer(letters_app(Letters("abcdefghij"))) as server:
        server.wait_ready()
        body = ask(server, GENERATE, max_tokens=100, stop=["def", "zz"]).json()
        assert (body["text_output"], body["finish_reason"]) == ("abc", "stop")
        streamed = events(ask(server, STREAM, max_tokens=100, stop=["def"]).text)
        assert [e["text_output"] for e in streamed] == ["a", "b", "c", ""]
        assert streamed[-1]["finish_reason"] == "stop"
        # "d" and "e" were held back while they could still begin "def", and never shown.
        longer = ask(server, GENERATE, max_tokens=100, stop=["dex"]).json()
        assert (longer["text_output"], longer["finish_reason"]) == ("abcdefghij" * 10, "length")


def test_max_tokens_ends_with_length() -> None:
    with LiveServer(letters_app(Letters("ab"))) as server:
        server.wait_ready()
        body = ask(server, GENERATE, max_tokens=7).json()
        assert (body["text_output"], body["finish_reason"]) == ("abababa", "length")
        streamed = events(ask(server, STREAM, max_tokens=3).text)
        assert [(e["text_output"], e.get("finish_reason")) for e in streamed] == [
            ("a", None),
            ("b", None),
            ("a", "length"),
        ]


def test_the_concurrency_limit_queues_then_refuses() -> None:
    slow = Letters(delay_s=0.02)
    with LiveServer(letters_app(slow, max_concurrency=1, max_queue=1)) as server:
        server.wait_ready()
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(ask, server, GENERATE, max_tokens=40)
            time.sleep(0.2)
            waiting = pool.submit(ask, server, GENERATE, max_tokens=5)
            time.sleep(0.2)
            refused = ask(server, GENERATE, max_tokens=5)
            assert running.result().status == 200
            assert waiting.result().json()["text_output"] == "abcde"
        assert refused.status == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"] == "the server is at capacity (1 generating, 1 waiting); retry shortly"


def test_no_free_slot_in_time_is_504() -> None:
    slow = Letters(delay_s=0.05)
    with LiveServer(letters_app(slow, max_concurrency=1, request_timeout_s=0.3)) as server:
        server.wait_ready()
        with ThreadPoolExecutor(1) as pool:
            stream = pool.submit(ask, server, STREAM, max_tokens=30)
            time.sleep(0.1)
            late = ask(server, GENERATE, max_tokens=2)
            assert stream.result().status == 200
        assert late.status == 504
        assert late.json() == {"error": "no generation slot free within 0.3 s"}


def test_a_client_that_leaves_stops_its_generation() -> None:
    slow = Letters(delay_s=0.01)
    with LiveServer(letters_app(slow)) as server:
        server.wait_ready()
        before = slow.produced
        body = json.dumps({"text_input": "x", "parameters": {"max_tokens": 400}}).encode()
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(
                b"POST " + STREAM.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            assert sock.recv(1024).startswith(b"HTTP/1.1 200")
            time.sleep(0.2)
        time.sleep(0.5)
        stopped_at = slow.produced
        time.sleep(0.5)
        assert slow.produced == stopped_at, "the generator went on after the client left"
        assert 0 < stopped_at - before < 400


class Failing(Letters):
    """Spells a few letters, then fails the way ``error`` says (InvalidInput for the prompt "bad")."""

    def tokens(self, prompt: str, *, temperature: float, seed: int | None):  # type: ignore[no-untyped-def]
        if prompt == "warm-up":
            yield from super().tokens(prompt, temperature=temperature, seed=seed)
        yield "a"
        yield "b"
        if prompt == "bad":
            raise InvalidInput("prompts may not be 'bad'")
        raise RuntimeError("CUDA error: device-side assert triggered (secret detail)")


def test_generation_errors_say_nothing_of_the_exception_and_carry_a_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="mlctl_serve"), LiveServer(letters_app(Failing())) as server:
        server.wait_ready()
        whole = server.post_json(GENERATE, {"text_input": "x"}, headers={"X-Request-Id": "gen-1"})
        streamed = server.post_json(STREAM, {"text_input": "x"}, headers={"X-Request-Id": "gen-2"})
        refused = server.post_json(GENERATE, {"text_input": "bad"})
    assert (whole.status, whole.headers["x-request-id"]) == (500, "gen-1")
    assert whole.json() == {"error": "internal server error (request id gen-1)"}
    assert streamed.status == 200  # the stream had begun
    assert streamed.headers["x-request-id"] == "gen-2"
    assert events(streamed.text)[-1] == {"error": "internal server error (request id gen-2)"}
    assert "secret detail" not in whole.text + streamed.text
    assert "request gen-1: generation failed" in caplog.text
    assert "request gen-2: generation failed" in caplog.text
    assert "secret detail" in caplog.text
    assert refused.status == 400
    assert refused.json() == {"error": "the model cannot take this input: prompts may not be 'bad'"}
