"""Client limits (mlctl_serve.connection and the body budget): slow, idle, greedy and malformed clients
are cut off with a JSON answer where HTTP allows one, and the server goes on serving the rest.

Each test talks raw HTTP/1.1 over a socket, since well-behaved clients cannot be slow or malformed."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mlctl_serve.connection import REFUSED_PAUSE_S
from mlctl_serve.testing import LiveServer
from runtime_process import infer, rss_mib, start_server
from serving_apps import INFER, Doubler, doubler_app, fill_up, metric, request

BODY = json.dumps(request([[1, 2, 3, 4]])).encode()
HEAD = b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def connect(server: LiveServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def read_all(sock: socket.socket, timeout: float = 10.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    started = time.monotonic()
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - started


def status_and_json(reply: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def serves(server: LiveServer) -> bool:
    return server.post_json(INFER, request([[1, 2, 3, 4]])).status == 200


@pytest.fixture
def limited() -> Iterator[LiveServer]:
    app = doubler_app(
        Doubler(),
        header_timeout_s=0.5,
        body_timeout_s=0.5,
        body_min_rate=1000,
        keepalive_timeout_s=0.5,
        max_header_bytes=2048,
        max_headers=20,
    )
    with LiveServer(app) as server:
        server.wait_ready()
        yield server


def test_half_sent_headers_get_408_once_the_header_time_is_spent(limited: LiveServer) -> None:
    with connect(limited) as sock:
        sock.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Le")
        reply, took = read_all(sock)
    assert status_and_json(reply) == (408, {"error": "request headers not complete within 0.5 s"})
    assert 0.4 < took < 3
    assert metric(limited, "mlserve_connections_cut_total", reason="header_timeout") == 1
    assert serves(limited)


def test_headers_dripped_byte_by_byte_do_not_extend_the_header_time(limited: LiveServer) -> None:
    with connect(limited) as sock:
        started = time.monotonic()
        head = HEAD + b"X-Slow: " + b"a" * 200
        try:
            for byte in head:
                sock.sendall(bytes([byte]))
                time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply, _ = read_all(sock)
        took = time.monotonic() - started
    assert status_and_json(reply)[0] == 408
    assert took < 3  # cut at 0.5 s, not after the ~3 s the drip would take


def test_a_body_shorter_than_its_content_length_gets_408_instead_of_hanging(limited: LiveServer) -> None:
    with connect(limited) as sock:
        sock.sendall(HEAD + b"Content-Length: 1000\r\n\r\n" + BODY[:10])
        reply, took = read_all(sock)
    assert status_and_json(reply) == (
        408,
        {"error": "request body not complete in time (the limit: 0.5 s plus 1 s per 1000 bytes received)"},
    )
    assert 0.4 < took < 3
    assert metric(limited, "mlserve_connections_cut_total", reason="body_timeout") == 1
    assert serves(limited)


def test_a_body_dripped_below_the_minimum_rate_is_cut(limited: LiveServer) -> None:
    padded = BODY + b" " * 3000
    with connect(limited) as sock:
        started = time.monotonic()
        sock.sendall(HEAD + b"Content-Length: " + str(len(padded)).encode() + b"\r\n\r\n")
        try:
            for i in range(0, len(padded), 50):  # 500 bytes/s: half the minimum of 1000
                sock.sendall(padded[i : i + 50])
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply, _ = read_all(sock)
        took = time.monotonic() - started
    assert status_and_json(reply)[0] == 408
    assert took < 4  # the whole drip would take 6.5 s


def test_a_slow_body_above_the_minimum_rate_is_served(limited: LiveServer) -> None:
    padded = BODY + b" " * 3000
    with connect(limited) as sock:
        sock.sendall(HEAD + b"Content-Length: " + str(len(padded)).encode() + b"\r\nConnection: close\r\n\r\n")
        for i in range(0, len(padded), 400):  # 4000 bytes/s, for about a second: longer than body_timeout_s
            sock.sendall(padded[i : i + 400])
            time.sleep(0.1)
        reply, _ = read_all(sock)
    status, body = status_and_json(reply)
    assert status == 200
    assert body["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0]  # type: ignore[index]


def test_idle_connections_are_closed_silently(limited: LiveServer) -> None:
    with connect(limited) as fresh, connect(limited) as used:
        used.sendall(HEAD + b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
        time.sleep(0.1)
        first = used.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        nothing, took = read_all(fresh)
        rest, _ = read_all(used)
    assert (nothing, rest) == (b"", b"")  # no answer: there was no request to answer
    assert took < 3
    assert metric(limited, "mlserve_connections_cut_total", reason="idle") == 2


def test_oversized_and_too_many_headers_get_431(limited: LiveServer) -> None:
    with connect(limited) as sock:
        sock.sendall(HEAD + b"X-Big: " + b"a" * 3000 + b"\r\nContent-Length: 2\r\n\r\n{}")
        big, _ = read_all(sock)
    with connect(limited) as sock:
        sock.sendall(HEAD + b"".join(b"X-H%d: 1\r\n" % i for i in range(30)) + b"Content-Length: 2\r\n\r\n{}")
        many, _ = read_all(sock)
    with connect(limited) as sock:  # one endless header line, sent in pieces: cut before it ends
        sock.sendall(HEAD + b"X-Endless: ")
        try:
            for _ in range(10):
                sock.sendall(b"a" * 1000)
                time.sleep(0.02)
        except (BrokenPipeError, ConnectionResetError):
            pass
        endless, _ = read_all(sock)
    assert status_and_json(big) == (431, {"error": "request line and headers exceed 2048 bytes"})
    assert status_and_json(many) == (431, {"error": "more than 20 header fields"})
    assert status_and_json(endless) == (431, {"error": "request line and headers exceed 2048 bytes"})
    assert serves(limited)


@pytest.mark.parametrize(
    "garbage",
    [b"GARBAGE\r\n\r\n", b"POST /x HTTP/1.1\r\nContent-Length: -5\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"],
)
def test_malformed_http_gets_a_json_400(limited: LiveServer, garbage: bytes) -> None:
    with connect(limited) as sock:
        sock.sendall(garbage)
        reply, _ = read_all(sock)
    status, body = status_and_json(reply)
    assert status == 400
    assert str(body["error"]).startswith("invalid HTTP request: ")


def test_at_the_connection_limit_idle_connections_make_room_then_new_ones_get_503() -> None:
    with LiveServer(doubler_app(Doubler(), max_connections=3, header_timeout_s=5)) as server:
        server.wait_ready()
        idle = [connect(server) for _ in range(3)]
        time.sleep(0.1)
        newcomer = server.post_json(INFER, request([[1, 2, 3, 4]]))  # the oldest idle one is closed for it
        assert newcomer.status == 200
        evicted, _ = read_all(idle[0], timeout=2)
        assert evicted == b""
        busy = idle[1:]
        for sock in busy:
            sock.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\n")  # mid-request: not idle
        busy.append(connect(server))
        busy[-1].sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\n")
        time.sleep(0.1)
        with connect(server) as refused:
            reply, _ = read_all(refused, timeout=3)
        assert status_and_json(reply) == (503, {"error": "the server has its limit of 3 connections; retry shortly"})
        for sock in [*busy, *idle]:
            sock.close()
        time.sleep(0.1)
        assert serves(server)
        assert metric(server, "mlserve_connections_cut_total", reason="too_many_connections") == 1
        assert metric(server, "mlserve_connections_cut_total", reason="idle_evicted") == 1


def test_bodies_beyond_the_buffered_bytes_budget_get_503_and_small_ones_still_pass() -> None:
    app = doubler_app(Doubler(), max_payload_bytes=150_000, max_buffered_bytes=200_000, body_timeout_s=5)
    with LiveServer(app) as server:
        server.wait_ready()
        with connect(server) as first:
            first.sendall(HEAD + b"Content-Length: 150000\r\n\r\n" + b" " * 1000)  # holds 150 kB of the budget
            time.sleep(0.2)
            with connect(server) as second:
                second.sendall(HEAD + b"Content-Length: 100000\r\n\r\n")
                reply, _ = read_all(second)
            assert status_and_json(reply) == (
                503,
                {"error": "the server holds its limit of request bodies (200000 bytes); retry shortly"},
            )
            assert serves(server)  # a small body is bounded by the connection limit, not the budget
        time.sleep(0.2)
        # The first one left: its share is back, and a large body fits again.
        padded = BODY + b" " * 120_000
        answer = server.request("POST", INFER, padded, {"Content-Type": "application/json"})
        assert answer.status == 200, answer.text
        assert metric(server, "mlserve_rejected_total", reason="buffered_bytes") == 1


def test_a_refused_connection_stays_usable_and_a_client_retrying_at_once_waits_a_moment() -> None:
    """At capacity a request is answered 503 on its head (its body is dropped as it comes) and the
    connection stays open; the next request on it is read only after REFUSED_PAUSE_S."""
    gate = threading.Event()
    with LiveServer(doubler_app(Doubler(gate=gate), max_batch_size=1, max_queue=1)) as server:
        gate.set()
        server.wait_ready()
        gate.clear()
        with ThreadPoolExecutor(2) as pool:
            held = fill_up(server, pool, 1)  # the queue of one is full
            one = HEAD + b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
            with connect(server) as sock:
                sock.sendall(one)
                first = sock.recv(65536)
                started = time.monotonic()
                sock.sendall(one)  # at once, ignoring Retry-After
                second = sock.recv(65536)
                waited = time.monotonic() - started
                gate.set()
                assert [f.result().status for f in held] == [200, 200]
                sock.sendall(one)  # the queue has room again: the same connection is served
                third = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 503 ")
    assert b"retry-after: 1\r\n" in first
    assert first.endswith(b'{"error":"the server is at capacity (1 requests queued or being read); retry shortly"}')
    assert second.startswith(b"HTTP/1.1 503 ")
    assert waited >= REFUSED_PAUSE_S * 0.9
    assert third.startswith(b"HTTP/1.1 200 ")
    assert third.endswith(b'"data":[2.0,4.0,6.0,8.0]}]}')


@pytest.mark.slow
def test_twenty_stalled_15_mb_bodies_neither_pin_memory_nor_stay(tmp_path: Path) -> None:
    """Issue 12 measured +300 MB held for a minute by 20 stalled 15 MB uploads. Now the buffered-bytes
    budget (128 MiB by default) refuses what does not fit, and the body time limit cuts the rest."""
    process, port = start_server(tmp_path, SERVING_BODY_TIMEOUT_S="1", SERVING_BODY_MIN_RATE="1000000")
    try:
        before = rss_mib(process.pid)
        sockets = []
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(
                b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 15000000\r\n\r\n" + b" " * 1_000_000
            )
            sockets.append(sock)
        time.sleep(0.5)
        held = rss_mib(process.pid) - before
        replies = [read_all(sock, timeout=10)[0] for sock in sockets]
        for sock in sockets:
            sock.close()
        statuses = sorted(int(reply.split(b" ", 2)[1]) for reply in replies)
        assert statuses == [408] * 8 + [503] * 12  # 8 x 15 MB fit in the budget; all of them are cut
        assert held < 60, f"{held:.0f} MiB held by the stalled bodies"
        assert infer(port)[0] == 200
    finally:
        process.kill()
        process.wait()
