"""``mlctl run``: serve a service from source on this machine, with reload.

:func:`plan_run` checks everything that can be checked up front (the config, the port, the
Python environment, the weights) so that problems surface as one clear line before any server
starts; :func:`serve` then runs the server until it exits or the user presses Ctrl-C.
"""

from __future__ import annotations

import errno
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

from mlctl.config import LoadedConfig
from mlctl.contract import serving_environment
from mlctl.errors import ConflictError, EnvironmentProblem, InputError, MlctlError
from mlctl.models import RunPlan
from mlctl.reporting import NullReporter, Reporter
from mlctl.weights import fetch

#: Modules the server process must be able to import (besides the service's own package).
SERVER_MODULES = ("mlctl_serve", "uvicorn", "torch")
STOP_GRACE_S = 10.0


class ServiceExited(MlctlError):
    """The service's server stopped by itself with an error."""


def plan_run(
    loaded: LoadedConfig,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    reload: bool = True,
    python: str | None = None,
    reporter: Reporter | None = None,
) -> RunPlan:
    """Check that a service can be served from source here, and say how.

    Args:
        loaded: The service's config (``load_service_config``), with its environment applied.
        host: Address to listen on.
        port: Port to listen on (default: ``serving.port``).
        reload: Restart the server when the code changes.
        python: Interpreter to run the server with (default: the service's ``.venv``, else this one).
        reporter: Progress (the download of weights pinned by URI, the first time).

    Raises:
        NotAServiceError: not inside a service. ConfigError: invalid mlctl.yaml.
        ConflictError: the port is taken. EnvironmentProblem: the Python environment lacks the
        server's packages, or the weights are missing and nothing makes them. Weights pinned by URI
        that cannot be downloaded: see ``mlctl.weights.fetch``.
    """
    config = loaded.config
    directory = loaded.directory
    port = config.serving.port if port is None else port
    if not 1 <= port <= 65535:
        raise InputError(f"--port {port}: must be between 1 and 65535")
    _check_port_free(host, port)

    interpreter = python or _service_python(directory)
    package = config.serving.app.split(":")[0].split(".")[0]
    missing = _missing_modules(interpreter, directory, (*SERVER_MODULES, package))
    if missing:
        raise EnvironmentProblem(
            f"{interpreter} cannot import {', '.join(missing)}, which the server needs",
            hint=f"install the service and its runtime into that Python: cd {directory} && "
            f"{interpreter} -m pip install \"$(mlctl runtime wheel)\" -e '.[test]'",
        )

    argv = [interpreter, "-m", "mlctl_serve", config.serving.app, "--host", host, "--port", str(port), "--access-log"]
    if reload:
        argv += ["--reload", "--reload-dir", str(directory)]
    env_vars = serving_environment(config)
    # On this machine /metrics stays on the serving port: two services run side by side would both
    # want serving.metrics_port (a pod has it to itself).
    env_vars.pop("SERVING_METRICS_PORT", None)
    prepare = None
    model = config.model
    if model.kind == "uri":
        assert model.uri is not None  # the config's own checks
        assert model.sha256 is not None
        weights = fetch(model.uri, model.sha256, reporter=reporter or NullReporter())
        env_vars["SERVING_MODEL_PATH"] = str(weights)
    elif model.baked:
        weights = directory / model.path
        env_vars["SERVING_MODEL_PATH"] = str(weights)
        if not weights.exists():
            if model.kind != "prepare":
                raise EnvironmentProblem(
                    f"weights file {model.path} is missing and mlctl.yaml has no model.prepare to make it",
                    hint=f"put the weights at {weights}, or set model.prepare in mlctl.yaml",
                )
            prepare = model.prepare
    shown_host = f"[{host}]" if ":" in host else host
    return RunPlan(
        service=config.name,
        directory=str(directory),
        url=f"http://{shown_host}:{port}",
        argv=tuple(argv),
        env=env_vars,
        prepare=prepare,
    )


def serve(plan: RunPlan, *, reporter: Reporter | None = None, ready_timeout_s: float = 600.0) -> int:
    """Run the planned server in the foreground until it exits or Ctrl-C; returns 0 after Ctrl-C.

    The server runs in its own process group so that one Ctrl-C reaches it once, through us,
    and it shuts down gracefully (a second signal would make uvicorn force-quit).

    Raises:
        ServiceExited: the server stopped by itself with a non-zero status.
    """
    reporter = reporter or NullReporter()
    env = {**os.environ, **plan.env}
    if plan.prepare:
        _prepare_weights(plan.prepare, plan, env, reporter)

    reporter.step(f"serving {plan.service} at {plan.url} (Ctrl-C to stop)")
    started = time.monotonic()
    process = subprocess.Popen(plan.argv, cwd=plan.directory, env=env, start_new_session=True)
    stop = threading.Event()
    watcher = threading.Thread(
        target=_watch_ready, args=(plan.url, process, stop, started, ready_timeout_s, reporter), daemon=True
    )
    watcher.start()
    previous = _forward_termination(process)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        reporter.step("stopping")
        code = _stop(process)
        reporter.info("stopped")
        return 0
    finally:
        stop.set()
        _restore(previous)
        if process.poll() is None:
            _stop(process)
    if code != 0:
        raise ServiceExited(
            f"the server of {plan.service} exited with status {code} (its output is above)",
            hint="fix the error it printed, then run `mlctl run` again",
        )
    return 0


def _prepare_weights(command: str, plan: RunPlan, env: dict[str, str], reporter: Reporter) -> None:
    """Make the missing weights with ``model.prepare``, with the server's own interpreter."""
    from mlctl import weights

    reporter.step(f"making the weights with model.prepare, in {plan.argv[0]}: {command}")
    argv = shlex.split(command)
    if argv and argv[0] in ("python", "python3"):
        argv[0] = plan.argv[0]  # the same interpreter as the server
    target = Path(env["SERVING_MODEL_PATH"])
    existed = target.exists()
    try:
        done = subprocess.run(argv, cwd=plan.directory, env=env, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise weights.prepare_did_not_start(command, exc.strerror or str(exc)) from None
    if done.returncode != 0:
        weights.undo_prepare(target, existed)
        raise weights.prepare_failed(command, done.returncode, done.stdout + done.stderr)
    if not target.exists():
        raise weights.prepare_wrote_nothing(command, str(target.relative_to(plan.directory)))


def _watch_ready(
    url: str,
    process: subprocess.Popen[bytes],
    stop: threading.Event,
    started: float,
    timeout: float,
    reporter: Reporter,
) -> None:
    deadline = started + timeout
    while not stop.is_set() and process.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as response:
                if response.status == 200:
                    reporter.info(f"ready after {time.monotonic() - started:.1f} s: {url}/v2/health/ready")
                    return
        except (OSError, urllib.error.URLError):
            pass
        stop.wait(0.2)


def _stop(process: subprocess.Popen[bytes]) -> int:
    """SIGINT (graceful), then SIGTERM, then SIGKILL, to the server's whole process group."""
    for sig, wait in ((signal.SIGINT, STOP_GRACE_S), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            return process.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    return process.wait()


def _forward_termination(process: subprocess.Popen[bytes]) -> dict[int, object]:
    """SIGTERM/SIGHUP to mlctl stop the server too (as Ctrl-C does)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous: dict[int, object] = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, handler)
    return previous


def _restore(previous: dict[int, object]) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)  # type: ignore[arg-type]


def _check_port_free(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InputError(f"--host {host}: cannot resolve it ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # uvicorn binds with SO_REUSEADDR, so a port in TIME_WAIT is free for it too.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConflictError(
                    f"port {port} on {host} is already in use",
                    hint=f"pick another with --port, or stop what listens there (e.g. `ss -ltnp 'sport = :{port}'`)",
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise InputError(f"--host {host}: not an address of this machine") from None
            if exc.errno == errno.EACCES:
                raise ConflictError(f"port {port} needs privileges to bind", hint="use a port above 1023") from None
            raise


def _service_python(directory: Path) -> str:
    """The service's own virtual environment when it has one, else the Python running mlctl."""
    for candidate in (directory / ".venv" / "bin" / "python", directory / "venv" / "bin" / "python"):
        if candidate.exists():
            return str(candidate)
    return sys.executable


def _missing_modules(python: str, directory: Path, modules: tuple[str, ...]) -> list[str]:
    probe = "import importlib.util as u, sys; print(','.join(m for m in sys.argv[1:] if u.find_spec(m) is None))"
    try:
        done = subprocess.run(
            [python, "-c", probe, *modules], cwd=directory, capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentProblem(f"cannot run {python}: {exc}", hint="pass another interpreter with --python") from None
    if done.returncode != 0:
        raise EnvironmentProblem(f"{python} failed: {done.stderr.strip().splitlines()[-1:]}")
    return [m for m in done.stdout.strip().split(",") if m]
