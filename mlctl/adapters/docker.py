"""The only module that imports the Docker SDK (docker-py)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from mlctl.errors import EnvironmentProblem


@dataclass(frozen=True)
class EngineInfo:
    version: str
    api_version: str
    host: str


def engine_info(timeout: float = 3.0) -> EngineInfo:
    """Ping the Docker engine named by DOCKER_HOST (or the default socket).

    Raises:
        EnvironmentProblem: the SDK is missing or no engine answers.
    """
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        raise EnvironmentProblem("the Docker SDK is not installed", hint="pip install docker") from None
    try:
        client = docker.from_env(timeout=int(max(timeout, 1)))
        try:
            version = client.version()
            return EngineInfo(
                version=str(version.get("Version", "?")),
                api_version=str(version.get("ApiVersion", "?")),
                host=_host(),
            )
        finally:
            client.close()
    except DockerException as exc:
        raise EnvironmentProblem(f"no Docker engine answers at {_host()}: {_reason(str(exc))}") from None


def _host() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _reason(text: str) -> str:
    """docker-py wraps the socket error in several layers; name the cause in words."""
    if "FileNotFoundError" in text or "No such file" in text:
        return "the socket does not exist (is the engine running?)"
    if "PermissionError" in text or "Permission denied" in text:
        return "permission denied on the socket (add your user to the docker group)"
    if "Connection refused" in text or "ConnectionRefused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    return text.split(": (")[0].strip() or "unknown error"
