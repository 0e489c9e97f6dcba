"""The local target's port check (no engine needed): only a port something listens on is refused."""

from __future__ import annotations

import errno
import socket

import pytest

from mlctl.deploy.local import _check_port
from mlctl.errors import ConflictError


def test_a_port_in_use_is_refused_with_another_to_try() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConflictError, match=f"^port {port} on 127.0.0.1 is in use$") as caught:
            _check_port(port)
        assert caught.value.hint == f"stop what uses it, or pass --port (e.g. {port + 1})"


def test_a_port_mlctl_may_not_bind_is_left_to_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    # A user without privileges cannot bind port 80, but the engine (root) publishes it: not a conflict.
    # (These tests run as root here, so the refusal is the kernel's answer, EACCES, given by hand.)
    def refuse(self: socket.socket, address: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(socket.socket, "bind", refuse)
    _check_port(80)  # no error: the deploy goes on and the engine answers for the port
