"""Writing files so that a reader never sees half of one, with the modes a user expects."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def umask() -> int:
    """The process's umask (reading it means setting it: it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomically(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``path`` whole or not at all.

    Write ``path`` whole or not at all, through a temporary file of its own in the same folder
    (other processes may write the same file at the same time: whichever lands last wins, whole).

    Args:
        path: The file; its folder must exist.
        data: The content.
        mode: Its permission bits (default: an existing file's, else 0o644 less the umask).
    """
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if mode is None:
            mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644 & ~umask()
        os.chmod(partial, mode)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
