"""``mlctl doctor``: is this machine ready for the road? One line per piece, each with a fix.

Required pieces (a failure makes ``mlctl doctor`` exit non-zero): Python >= 3.10, git, the Docker
engine (``mlctl build`` and local runs) and the Helm engine (``mlctl deploy``). The registry, the
cluster and GPUs are reported but optional on a workstation: CPU-only machines and machines
without a kube context are normal places to develop. So are the two things a service's first
build fetches, each with its fix: the root image (on this machine, or in a registry that answers)
and the wheel index torch comes from (it answers, with a wheel of the service's flavour).
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
from typing import TYPE_CHECKING

from mlctl.errors import BuildError, ClusterError, ConfigError, EnvironmentProblem, MlctlError, NotAServiceError
from mlctl.models import Check, CheckStatus, DoctorReport

if TYPE_CHECKING:
    from mlctl.config import LoadedConfig, ServiceConfig
    from mlctl.images.matrix import Resolved
    from mlctl.ports import Cluster

MIN_PYTHON = (3, 10)


def run_doctor(
    project_dir: Path | str | None = None,
    *,
    kube_context: str | None = None,
    timeout_s: float = 3.0,
    loaded: LoadedConfig | None = None,
    root: str | None = None,
    torch_index: str | None = None,
) -> DoctorReport:
    """Run every check (in parallel: the slow ones are network timeouts) and return the report.

    Args:
        project_dir: Where to look for a service (its registry and cluster are checked too).
        kube_context: The kube context to check (default: the current one).
        timeout_s: Seconds to wait for each network check.
        loaded: The service's config, already loaded (then ``project_dir`` is not read).
        root: The root image builds start from (``--root``), instead of the matrix's for the service.
        torch_index: The wheel index builds take torch from (``--torch-index``), instead of the matrix's.
    """
    service: Service = (loaded.config, "") if loaded is not None else _load_service(project_dir)
    checks: list[Callable[[], Check]] = [
        check_python,
        check_git,
        lambda: check_docker(timeout_s),
        lambda: check_registry(service, timeout_s),
        lambda: check_registry_login(service, timeout_s),
        lambda: check_kubernetes(kube_context, timeout_s, service),
        check_helm,
        check_gpu,
        check_new_defaults,
        lambda: check_root_image(service, root, timeout_s),
        lambda: check_wheel_index(service, torch_index, timeout_s),
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
    """This Python is new enough."""
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
    """The git binary is installed (mlctl new, build tags)."""
    from mlctl.adapters.git import git_version

    try:
        return Check("git", CheckStatus.OK, f"git {git_version()}", True)
    except EnvironmentProblem as exc:
        return Check("git", CheckStatus.FAIL, exc.message, True, "install git (apt-get install git)")


def check_docker(timeout_s: float) -> Check:
    """A Docker engine answers (mlctl build, the local target)."""
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


#: The service's config, or why there is none: "not in a service", or the config's own problem.
Service = tuple["ServiceConfig | None", str]


def _load_service(project_dir: Path | str | None) -> Service:
    from mlctl.config import load_service_config

    try:
        return load_service_config(project_dir).config, ""
    except NotAServiceError:
        return None, "not in a service"
    except ConfigError:
        return None, "mlctl.yaml is invalid"
    except MlctlError as exc:
        return None, exc.message


def check_registry(service: Service, timeout_s: float) -> Check:
    """The service's image.registry answers."""
    config, problem = service
    if config is None:
        if problem == "not in a service":
            return Check("registry", CheckStatus.INFO, "not in a service: no registry to check", False)
        hint = "run `mlctl config validate`" if problem == "mlctl.yaml is invalid" else None
        return Check("registry", CheckStatus.WARN, problem, False, hint)
    if not config.image.registry:
        return Check(
            "registry",
            CheckStatus.INFO,
            "image.registry is empty: images stay on this machine",
            False,
            "set image.registry in mlctl.yaml to push",
        )
    return probe_registry(config.image.registry, timeout_s)


def _registry_host(registry: str) -> str:
    host = registry.split("/")[0]
    if "." not in host and ":" not in host and host != "localhost":
        return "registry-1.docker.io"  # a Docker Hub namespace such as "acme"
    return host


def check_registry_login(service: Service, timeout_s: float) -> Check:
    """Whether the registry takes the login `docker login` stored (what `mlctl build --push` will use)."""
    config = service[0]
    if config is None or not config.image.registry:
        return Check("registry login", CheckStatus.INFO, "no registry to log in to", False)
    from mlctl.adapters.docker import stored_login

    host = _registry_host(config.image.registry)
    local = host.startswith(("localhost", "127.", "[::1]"))
    url = f"{'http' if local else 'https'}://{host}/v2/"
    status, challenge, _ = _get(url, None, timeout_s)
    if status is None:
        return Check("registry login", CheckStatus.WARN, f"{host} does not answer, so the login is not checked", False)
    login = stored_login(host)
    if status == 200:
        return Check("registry login", CheckStatus.OK, f"{host} needs no login", False)
    if login is None:
        return Check(
            "registry login",
            CheckStatus.WARN,
            f"not logged in to {host} (it asks for a login): pushes will be refused",
            False,
            f"docker login {host}",
        )
    accepted = _try_login(url, challenge, login.username, login.secret, timeout_s)
    if accepted:
        return Check("registry login", CheckStatus.OK, f"logged in to {host} as {login.username}", False)
    return Check(
        "registry login",
        CheckStatus.WARN,
        f"{host} refuses the stored login of {login.username} (from {login.source})",
        False,
        f"docker login {host} again (the password or token may have expired)",
    )


def _get(url: str, authorization: str | None, timeout_s: float) -> tuple[int | None, str, str]:
    """(HTTP status or None, the WWW-Authenticate challenge, why it failed when there is no status)."""
    request = urllib.request.Request(url, headers={"Authorization": authorization} if authorization else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, "", ""
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("WWW-Authenticate", ""), ""
    except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
        return None, "", str(getattr(exc, "reason", exc))


def _try_login(url: str, challenge: str, username: str, secret: str, timeout_s: float) -> bool:
    """The registry's own auth flow: Basic on /v2/, or a Bearer token from the realm it names."""
    import base64
    import re
    import urllib.parse

    basic = "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode()
    if challenge.lower().startswith("bearer"):
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", "")
        if not realm:
            return False
        query = urllib.parse.urlencode({k: v for k, v in params.items() if k in ("service", "scope")})
        return _get(f"{realm}?{query}" if query else realm, basic, timeout_s)[0] == 200
    return _get(url, basic, timeout_s)[0] == 200


def probe_registry(registry: str, timeout_s: float) -> Check:
    """Ask the registry's ``/v2/`` endpoint; 200 or 401 (login needed) both mean it is there."""
    host = _registry_host(registry)
    local = host.startswith(("localhost", "127.", "[::1]"))
    last = ""
    for scheme in ("http", "https") if local else ("https",):
        url = f"{scheme}://{host}/v2/"
        status, _, failure = _get(url, None, timeout_s)
        if status in (200, 401):
            login = " (login needed: docker login " + host + ")" if status == 401 else ""
            return Check("registry", CheckStatus.OK, f"{url} answers{login}", False)
        last = failure or f"HTTP {status}"
    return Check(
        "registry",
        CheckStatus.WARN,
        f"registry {host} does not answer: {last}",
        False,
        "check image.registry in mlctl.yaml and your network; pushes will fail until it answers",
    )


#: The checks of what a service's first build fetches: optional, but `mlctl build` stops without either.
BUILD_NEEDS = ("root image", "wheel index")

ROOT_FIX = (
    "make one here: `mlctl images root` (Debian, with mmdebstrap), then `mlctl build --root mlctl/root:bookworm` "
    "(or MLCTL_ROOT); or `docker load` the image saved on a machine that can pull it"
)


def _resolved(config: ServiceConfig) -> Resolved:
    from mlctl.images.matrix import resolve

    runtime = config.runtime
    return resolve(runtime.python, runtime.torch, runtime.accelerator, runtime.cuda)


def check_root_image(service: Service, root: str | None, timeout_s: float) -> Check:
    """The root image the service's build starts from is on this machine, or its registry has it."""
    name = BUILD_NEEDS[0]
    config, problem = service
    if root is None:
        if config is None:
            return Check(name, CheckStatus.INFO, f"{problem}: no root image to check", False)
        try:
            root = _resolved(config).root
        except MlctlError as exc:
            return Check(name, CheckStatus.WARN, exc.message, False, exc.hint)
    from mlctl.adapters.docker import DockerImageBuilder
    from mlctl.images.root import registry_host

    try:
        builder = DockerImageBuilder.connect(timeout=max(timeout_s, 1.0))
    except EnvironmentProblem:
        return Check(name, CheckStatus.INFO, f"no Docker engine answers: {root} not checked", False)
    host = registry_host(root)
    try:
        if builder.inspect(root) is not None:
            return Check(name, CheckStatus.OK, f"{root} is on this machine", False)
        exists = builder.remote_exists(root)
    except ClusterError as exc:
        reason = exc.message.split(": ", 1)[-1]
        return Check(
            name,
            CheckStatus.WARN,
            f"{root} is not on this machine and its registry {host} cannot be reached: {reason}",
            False,
            ROOT_FIX,
        )
    except Exception as exc:  # the engine's own timeout: it could not tell in time
        return Check(
            name, CheckStatus.WARN, f"{root} is not on this machine; {host} did not say: {exc}", False, ROOT_FIX
        )
    finally:
        builder.close()
    if exists:
        return Check(
            name, CheckStatus.OK, f"{root} is not on this machine; {host} has it (the first build pulls it)", False
        )
    return Check(
        name, CheckStatus.WARN, f"{root} is not on this machine, and {host} has no such image", False, ROOT_FIX
    )


def check_wheel_index(service: Service, torch_index: str | None, timeout_s: float) -> Check:
    """The wheel index the service's torch comes from answers, with a wheel of the service's flavour."""
    name = BUILD_NEEDS[1]
    config, problem = service
    if config is None:
        return Check(name, CheckStatus.INFO, f"{problem}: no wheel index to check", False)
    from mlctl.images import index
    from mlctl.images.wheels import PLATFORMS

    try:
        resolved = _resolved(config)
        url = torch_index or resolved.index_url
        wheel = index.torch_on_index(
            url, resolved, PLATFORMS["linux/amd64"], "linux/amd64", timeout=timeout_s, attempts=1
        )
    except ClusterError as exc:
        return Check(
            name,
            CheckStatus.WARN,
            exc.message,
            False,
            "mlctl build takes torch from there: check the network or proxy, or build with --torch-index URL "
            "(a mirror) or --wheelhouse DIR (wheels downloaded elsewhere)",
        )
    except (BuildError, MlctlError) as exc:
        return Check(name, CheckStatus.WARN, exc.message, False, exc.hint)
    return Check(name, CheckStatus.OK, f"{index.redact(url)} answers and has {wheel.filename}", False)


def check_kubernetes(context: str | None, timeout_s: float, service: Service = (None, "")) -> Check:
    """The kube context's cluster answers, and what GPU nodes it has."""
    from mlctl.adapters.kube import KubeCluster

    try:
        cluster = KubeCluster.connect(context, timeout=timeout_s)
        try:
            info = cluster.info()
            gpus = _gpu_nodes(cluster)
        finally:
            cluster.close()
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
    answers = f"context {info.context}: {info.server} answers (Kubernetes {info.version})"
    config = service[0]
    wanted = config.resources.gpu.count if config is not None and config.runtime.accelerator == "cuda" else 0
    if gpus is None:
        return Check("kubernetes", CheckStatus.OK, f"{answers}; its nodes cannot be listed with this login", False)
    if wanted and not gpus:
        return Check(
            "kubernetes",
            CheckStatus.WARN,
            f"{answers}, but no node offers nvidia.com/gpu and the service asks for {wanted}",
            False,
            "deploy to a cluster with GPU nodes (and the NVIDIA device plugin), or set runtime.accelerator: cpu",
        )
    return Check("kubernetes", CheckStatus.OK, f"{answers}; {_describe_gpus(gpus)}", False)


def _gpu_nodes(cluster: Cluster) -> list[tuple[str, int, str]] | None:
    """(node, allocatable GPUs, GPU product) of each GPU node; None when nodes cannot be listed."""
    try:
        nodes = cluster.nodes()
    except ClusterError:
        return None
    return [(node.name, node.gpus, node.product or "") for node in nodes if node.gpus > 0]


def _describe_gpus(gpus: list[tuple[str, int, str]]) -> str:
    if not gpus:
        return "no GPU nodes"
    kinds: dict[str, int] = {}
    for _, count, product in gpus:
        kinds[product or "unlabelled GPU"] = kinds.get(product or "unlabelled GPU", 0) + count
    total = sum(kinds.values())
    detail = ", ".join(f"{n} x {kind}" for kind, n in sorted(kinds.items()))
    return f"{len(gpus)} GPU node(s), {total} GPUs ({detail})"


def check_helm() -> Check:
    """The Helm engine loads."""
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
    """The GPUs torch sees on this machine, if any."""
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


def check_new_defaults() -> Check:
    """What ``mlctl new`` takes by default on this machine when it does not ask, and why (as it says itself)."""
    from mlctl.adapters.gpu import seen_gpus
    from mlctl.scaffold.create import accelerator_default

    accelerator, why = accelerator_default(seen_gpus())
    return Check("new defaults", CheckStatus.INFO, f"mlctl new takes accelerator={accelerator} here: {why}", False)


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
