"""SIGTERM with a grace of 0 (stop now) or a fraction of a second: what is still running at the end is
answered with a JSON 503, and the process exits 0."""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from runtime_process import infer, start_server


def post(port: int) -> tuple[int, object, dict[str, str]]:
    status, body, headers = infer(port)
    return status, json.loads(body), headers


@pytest.mark.slow
def test_a_grace_of_zero_answers_everything_still_running_with_503_at_once(tmp_path: Path) -> None:
    process, port = start_server(
        tmp_path, TEST_MODEL_DELAY_S="2", SERVING_MAX_BATCH_SIZE="1", SERVING_GRACEFUL_SHUTDOWN_S="0"
    )
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(post, port) for _ in range(3)]
        time.sleep(0.5)  # one in the model (2 s), two queued
        stopped = time.monotonic()
        process.send_signal(signal.SIGTERM)
        answers = [f.result() for f in futures]
        answered = time.monotonic() - stopped
    for status, body, headers in answers:
        assert status == 503
        assert body == {"error": "the server stopped before this request was answered; retry"}
        assert headers["retry-after"] == "1"
        assert len(headers["x-request-id"]) > 8
    assert answered < 1.0  # not after the 2 s batch
    assert process.wait(30) == 0


@pytest.mark.slow
def test_a_fractional_grace_lets_quick_requests_finish_and_answers_the_rest(tmp_path: Path) -> None:
    process, port = start_server(
        tmp_path, TEST_MODEL_DELAY_S="0.4", SERVING_MAX_BATCH_SIZE="1", SERVING_GRACEFUL_SHUTDOWN_S="0.6"
    )
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(post, port) for _ in range(4)]
        time.sleep(0.2)  # one in the model, three queued: 1.6 s of work for a 0.6 s grace
        stopped = time.monotonic()
        process.send_signal(signal.SIGTERM)
        statuses = sorted(f.result()[0] for f in futures)
        answered = time.monotonic() - stopped
    assert statuses[0] == 200  # the one in the model finished within the grace
    assert statuses[-1] == 503
    assert set(statuses) == {200, 503}
    assert 0.5 < answered < 1.5  # the grace was 0.6 s: neither "forever" nor "at once"
    assert process.wait(30) == 0
