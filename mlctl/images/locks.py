"""Locks between mlctl processes on one machine, so that builds at the same time share work.

Two builds on one Docker engine at once would race in two ways. Each serves its wheelhouse on
loopback, and the second finds the preferred port taken and falls back to another; the port is part
of the RUN lines, so that build misses the builder's cache. And both find a base layer missing and
build it; the later tag wins and the other image (a gigabyte for the torch layer) is left untagged.
So a build holds its engine's lock while it serves wheels and builds; another build waits for it,
then finds the layers the first one made. Downloads into the wheel cache take a lock of their own.

The locks are advisory ``flock`` locks, released by the kernel when their process ends, so a
crashed build never leaves a stale lock behind. Where ``fcntl`` is missing (Windows, where mlctl
does not build images) they are no-ops.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def engine_lock_path(host: str | None = None) -> Path:
    """The lock file of the Docker engine at ``host`` (default: ``DOCKER_HOST``, else the local socket).

    It lives in the system's temporary directory, shared by every user of the engine on this machine.
    """
    host = host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    key = hashlib.sha256(host.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"mlctl-build-{key}.lock"


#: Lock files this process holds, and how many blocks hold each.
_held: dict[str, int] = {}


@contextmanager
def held(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the exclusive lock ``path`` for the block; ``on_wait`` is called once if another holds it.

    Re-entrant within a process: a caller may hold a lock around several builds that take it again
    (they then run with no other process's build between them). Not a lock between threads.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    key = str(path)
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    fd = _open(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _open(path: Path) -> int:
    """A read-only descriptor of the lock file (flock needs no write access), made if missing.

    An existing file is opened without O_CREAT: in a sticky world-writable directory such as /tmp,
    Linux refuses O_CREAT on another user's file (fs.protected_regular).
    """
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o666)  # other users of the engine take the same lock
        return fd
