"""Writes that are all or nothing, even when the process is told to stop half-way.

Python turns SIGINT (Ctrl-C) into KeyboardInterrupt, but SIGTERM (``kill``, CI cancelling a job) and
SIGHUP (a closed terminal) end the process at once, skipping every ``except``/``finally``: a staging
directory or temporary file is left behind. Inside :func:`interruptible` all three raise
KeyboardInterrupt (the CLI exits 130), and :meth:`Interrupts.held` holds them back while a step
must finish as one: an atomic rename and its bookkeeping, or the cleanup after a failure.

SIGKILL cannot be caught; what it leaves behind is found and removed by the next run (see
``mlctl.scaffold.create``). :func:`replace_file` writes one file this way.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

#: The signals that end mlctl which a process can catch.
CATCHABLE = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupts:
    """The state of :func:`interruptible`: whether signals are held back, and one that arrived meanwhile."""

    def __init__(self) -> None:
        self.holding = 0
        self.pending: int | None = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.holding:
            self.pending = signum
            return
        raise KeyboardInterrupt

    @contextmanager
    def held(self, *, then_raise: bool = True) -> Iterator[None]:
        """Hold signals back until the block ends.

        Signals that arrive inside this block take effect when it ends (or never, without ``then_raise``:
        for cleanup that is already on its way out because of an exception).
        """
        self.holding += 1
        try:
            yield
        finally:
            self.holding -= 1
            if not self.holding and self.pending is not None:
                self.pending = None
                if then_raise:
                    raise KeyboardInterrupt


@contextmanager
def interruptible() -> Iterator[Interrupts]:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt inside the block; handlers are restored after.

    Signals the process ignores (``nohup`` ignores SIGHUP) stay ignored. Outside the main thread,
    where Python cannot install handlers, nothing changes.
    """
    state = Interrupts()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in CATCHABLE:
            current = signal.getsignal(sig)
            if current is signal.SIG_IGN:
                continue
            previous[sig] = signal.signal(sig, state.handle)
    try:
        yield state
    finally:
        for caught, handler in previous.items():
            signal.signal(caught, handler)


def umask() -> int:
    """The process's umask (reading it means setting it: it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def replace_file(path: Path, content: bytes, *, mode: int | None = None) -> None:
    """Write ``path`` whole or not at all.

    The content goes to a temporary file of its own beside ``path``, then one rename: readers see the
    old content or the new, concurrent writers each land whole (the last one wins), and an interrupted
    write (Ctrl-C, SIGTERM, SIGHUP) leaves no temporary file behind.

    Args:
        path: The file; its folder must exist.
        content: The bytes to write.
        mode: Its permission bits (default: an existing file's, else 0o644 less the umask).
    """
    with interruptible() as interrupts:
        with interrupts.held():
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(content)
            if mode is None:
                mode = path.stat().st_mode if path.exists() else 0o644 & ~umask()
            os.chmod(temporary, mode & 0o7777)
            with interrupts.held():
                os.replace(temporary, path)
        except BaseException:
            with interrupts.held(then_raise=False):
                Path(temporary).unlink(missing_ok=True)
            raise
