"""``mlctl doctor``: is this machine ready for the road? One line per piece, each with a fix.

Required pieces (a failure makes ``mlctl doctor`` exit non-zero): Python >= 3.10, git, the Docker
engine (``mlctl build`` and local runs) and the Helm engine (``mlctl deploy``). The registry, the
cluster and GPUs are reported but optional on a workstation: CPU-only machines and machines
without a kube context are normal places to develop.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mlctl.errors import ClusterError, ConfigError, EnvironmentProblem, MlctlError, NotAServiceError
from mlctl.models import Check, CheckStatus, DoctorReport

MIN_PYTHON = (3, 10)


def run_doctor(
    project_dir: Path | str | None = None, *, kube_context: str | None = None, timeout_s: float = 3.0
) -> DoctorReport:
    """Run every check (in parallel: the slow ones are network timeouts) and return the report."""
    checks: list[Callable[[], Check]] = [
        check_python,
        check_git,
        lambda: check_docker(timeout_s),
        lambda: check_registry(project_dir, timeout_s),
        lambda: check_kubernetes(kube_context, timeout_s),
        check_helm,
        check_gpu,
    ]
    with ThreadPoolExecutor(max_workers=len(checks)) as pool:
        results = list(pool.map(_guarded, checks))
    return DoctorReport(tuple(results))


def _guarded(check: Callable[[], Check]) -> Check:
    try:
        return check()
    except Exception as exc:  # a check must never take the whole report down
        return Check("check", CheckStatus.FAIL, f"{type(exc).__name__}: {exc}", True, "this is a bug in mlctl")


def check_python() -> Check:
    version = ".".join(str(v) for v in sys.version_info[:3])
    if sys.version_info[:2] >= MIN_PYTHON:
        return Check("python", CheckStatus.OK, f"Python {version}", True)
    return Check(
        "python",
        CheckStatus.FAIL,
        f"Python {version} is older than {'.'.join(map(str, MIN_PYTHON))}",
        True,
        "install Python 3.10 or newer",
    )


def check_git() -> Check:
    from mlctl.adapters.git import git_version

    try:
        return Check("git", CheckStatus.OK, f"git {git_version()}", True)
    except EnvironmentProblem as exc:
        return Check("git", CheckStatus.FAIL, exc.message, True, "install git (apt-get install git)")


def check_docker(timeout_s: float) -> Check:
    from mlctl.adapters.docker import engine_info

    try:
        info = engine_info(timeout_s)
    except EnvironmentProblem as exc:
        return Check(
            "docker",
            CheckStatus.FAIL,
            exc.message,
            True,
            "start the Docker engine (sudo systemctl start docker, or Docker Desktop); "
            "mlctl build and local deploys need it",
        )
    return Check("docker", CheckStatus.OK, f"Docker {info.version} (API {info.api_version}) at {info.host}", True)


def check_registry(project_dir: Path | str | None, timeout_s: float) -> Check:
    from mlctl.config import load_service_config

    try:
        config = load_service_config(project_dir).config
    except NotAServiceError:
        return Check("registry", CheckStatus.INFO, "not in a service: no registry to check", False)
    except ConfigError:
        return Check("registry", CheckStatus.WARN, "mlctl.yaml is invalid", False, "run `mlctl config validate`")
    except MlctlError as exc:
        return Check("registry", CheckStatus.WARN, exc.message, False)
    if not config.image.registry:
        return Check(
            "registry",
            CheckStatus.INFO,
            "image.registry is empty: images stay on this machine",
            False,
            "set image.registry in mlctl.yaml to push",
        )
    return probe_registry(config.image.registry, timeout_s)


def probe_registry(registry: str, timeout_s: float) -> Check:
    """Ask the registry's ``/v2/`` endpoint; 200 or 401 (login needed) both mean it is there."""
    host = registry.split("/")[0]
    if "." not in host and ":" not in host and host != "localhost":
        host = "registry-1.docker.io"  # a Docker Hub namespace such as "acme"
    local = host.startswith(("localhost", "127.", "[::1]"))
    schemes = ("http", "https") if local else ("https",)
    last = ""
    for scheme in schemes:
        url = f"{scheme}://{host}/v2/"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
            last = str(getattr(exc, "reason", exc))
            continue
        if status in (200, 401):
            login = " (login needed: docker login " + host + ")" if status == 401 else ""
            return Check("registry", CheckStatus.OK, f"{url} answers{login}", False)
        last = f"HTTP {status}"
    return Check(
        "registry",
        CheckStatus.WARN,
        f"registry {host} does not answer: {last}",
        False,
        "check image.registry in mlctl.yaml and your network; pushes will fail until it answers",
    )


def check_kubernetes(context: str | None, timeout_s: float) -> Check:
    from mlctl.adapters.kube import cluster_info

    try:
        info = cluster_info(context, timeout_s)
    except EnvironmentProblem as exc:
        return Check("kubernetes", CheckStatus.WARN, exc.message, False, exc.hint)
    except ClusterError as exc:
        return Check(
            "kubernetes",
            CheckStatus.WARN,
            exc.message,
            False,
            "check the VPN/network, or pick another context (kubectl config use-context NAME)",
        )
    return Check(
        "kubernetes",
        CheckStatus.OK,
        f"context {info.context}: {info.server} answers (Kubernetes {info.version})",
        False,
    )


def check_helm() -> Check:
    from mlctl.adapters.helm import engine_version

    try:
        return Check("helm", CheckStatus.OK, f"Helm engine {engine_version()}", True)
    except EnvironmentProblem as exc:
        binary = shutil.which("helm")
        if binary:
            return Check(
                "helm", CheckStatus.WARN, f"{exc.message}; a helm binary is on PATH ({binary})", True, exc.hint
            )
        return Check("helm", CheckStatus.FAIL, exc.message, True, exc.hint)


def check_gpu() -> Check:
    from mlctl.adapters.gpu import torch_info

    driver = _nvidia_smi()
    torch = torch_info()
    torch_text = "torch not installed" if torch is None else f"torch {torch.version}"
    if torch is not None:
        torch_text += f" (CUDA {torch.cuda_version})" if torch.cuda_available else ", CUDA not available"
    if driver is None:
        return Check(
            "gpu",
            CheckStatus.INFO,
            f"no NVIDIA GPU found: services run on the CPU here; {torch_text}",
            False,
        )
    if torch is not None and not torch.cuda_available:
        return Check(
            "gpu",
            CheckStatus.WARN,
            f"{driver}, but {torch_text}",
            False,
            "install a CUDA build of torch that this driver supports (pytorch.org/get-started)",
        )
    return Check("gpu", CheckStatus.OK, f"{driver}; {torch_text}", False)


def _nvidia_smi() -> str | None:
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    try:
        done = subprocess.run(
            [binary, "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    rows = [r.split(",") for r in done.stdout.strip().splitlines() if "," in r]
    if done.returncode != 0 or not rows:
        return None
    names = sorted({r[0].strip() for r in rows})
    return f"{len(rows)} GPU(s): {', '.join(names)}, driver {rows[0][1].strip()}"
