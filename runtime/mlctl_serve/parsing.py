"""Large request bodies are parsed in a process of their own, so the event loop keeps answering.

``orjson.loads`` of a 16 MB body is one C call of about 150 ms that holds the GIL: done on the event
loop, or on any thread of the server, it stalls health checks and every other request for that long.
Bodies larger than OFFLOAD_BYTES go instead to a parser process (``python -m mlctl_serve.parsing``,
started at the first such body and kept): it checks the request and sends back the typed arrays, which
cost the server a memory copy to unpickle. Smaller bodies are parsed in place: the round trip would
cost more than the parse.

Frames on the pipes: an 8-byte little-endian length, then that many bytes. The first frame to the
child is the pickled ``(inputs, outputs, max_rows)``; then one body per frame, answered in order by
one pickled ``("ok", InferRequest)`` or ``("error", status, message)`` each.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from mlctl_serve.protocol import InferRequest, ProtocolError, Spec, parse_infer_request

log = logging.getLogger("mlctl_serve")

#: Bodies larger than this are parsed by the parser process (about 3 ms of orjson in place).
OFFLOAD_BYTES = 256 * 1024
_LENGTH = struct.Struct("<Q")


def _write_frame(stream: IO[bytes], data: bytes) -> None:
    stream.write(_LENGTH.pack(len(data)))
    stream.write(data)
    stream.flush()


def _read_frame(stream: IO[bytes]) -> bytes | None:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        return None
    return data


class ParserProcess:
    """The parser process of one server, and the thread that talks to it (one body at a time)."""

    def __init__(self, inputs: Sequence[Spec], outputs: Sequence[Spec], max_rows: int) -> None:
        self._setup = pickle.dumps((tuple(inputs), tuple(outputs), max_rows))
        self._process: subprocess.Popen[bytes] | None = None
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parser-io")
        self._lock = threading.Lock()

    async def parse(self, body: bytes) -> InferRequest:
        """The checked request, or ProtocolError as parse_infer_request raises it."""
        answer = await asyncio.get_running_loop().run_in_executor(self._io, self._round_trip, body)
        if answer[0] == "ok":
            request: InferRequest = answer[1]
            return request
        raise ProtocolError(answer[1], answer[2])

    def close(self) -> None:
        self._io.shutdown(wait=False, cancel_futures=True)
        process, self._process = self._process, None
        if process is not None and process.stdin is not None:
            process.stdin.close()  # the child exits at the end of its input
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()

    def _round_trip(self, body: bytes) -> tuple[Any, ...]:
        # On the parser-io thread: its blocking pipe reads and writes release the GIL.
        with self._lock:
            for attempt in (1, 2):
                process = self._started()
                assert process.stdin is not None
                assert process.stdout is not None
                try:
                    _write_frame(process.stdin, body)
                    frame = _read_frame(process.stdout)
                except (BrokenPipeError, OSError):
                    frame = None
                if frame is not None:
                    answer: tuple[Any, ...] = pickle.loads(frame)
                    return answer
                # The child died (killed for memory, say): start another, and try this body once more.
                log.error("the parser process exited (status %s); starting another", process.poll())
                self._process = None
                if attempt == 2:
                    raise RuntimeError("the parser process failed twice on this request")
        raise AssertionError("unreachable")

    def _started(self) -> subprocess.Popen[bytes]:
        if self._process is None or self._process.poll() is not None:
            process = subprocess.Popen(
                [sys.executable, "-m", "mlctl_serve.parsing"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            assert process.stdin is not None
            _write_frame(process.stdin, self._setup)
            self._process = process
        return self._process


def main() -> int:
    """The parser process: bodies in on stdin, answers out on stdout, until stdin ends."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    setup = _read_frame(stdin)
    if setup is None:
        return 0
    inputs, outputs, max_rows = pickle.loads(setup)
    while True:
        body = _read_frame(stdin)
        if body is None:
            return 0
        try:
            answer: tuple[Any, ...] = ("ok", parse_infer_request(body, inputs, outputs, max_rows))
        except ProtocolError as exc:
            answer = ("error", exc.status, exc.message)
        except RecursionError:
            answer = ("error", 400, "request body is nested too deeply")
        _write_frame(stdout, pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))


if __name__ == "__main__":
    raise SystemExit(main())
