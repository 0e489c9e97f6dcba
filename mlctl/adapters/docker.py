"""The only module that imports the Docker SDK (docker-py).

``DockerImageBuilder`` implements ``mlctl.ports.ImageBuilder``, the narrow interface the image core
uses: inspect, build (streamed), pull, tag, push (streamed), look up a remote image, list and remove,
and run a command to its end in an image (``model.prepare`` in the service's own environment).
docker-py drives the classic builder, which is present on every engine; mlctl's own content tags
make its cache-by-tag all that is needed.

``Containers`` is what the local deploy target uses: run a service image as a container, read its
state and log, stop and remove it.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlctl.errors import BuildError, ClusterError, ConflictError, EnvironmentProblem, NotFoundError
from mlctl.models import ImageRef
from mlctl.ports import BuildLog, LineHandler, LocalImage, PushReport


@dataclass(frozen=True)
class EngineInfo:
    """The Docker engine that answered: its version, API version and address."""

    version: str
    api_version: str
    host: str


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


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


def _sdk() -> Any:
    try:
        import docker
    except ImportError:
        raise EnvironmentProblem("the Docker SDK is not installed", hint="pip install docker") from None
    return docker


def engine_info(timeout: float = 3.0) -> EngineInfo:
    """Ping the Docker engine named by DOCKER_HOST (or the default socket).

    Raises:
        EnvironmentProblem: the SDK is missing or no engine answers.
    """
    docker = _sdk()
    from docker.errors import DockerException

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


def _client(timeout: float) -> Any:
    docker = _sdk()
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=int(timeout))
        client.ping()
    except DockerException as exc:
        raise EnvironmentProblem(
            f"no Docker engine answers at {_host()}: {_reason(str(exc))}",
            hint="start the Docker engine (sudo systemctl start docker), then retry; `mlctl doctor` checks it",
        ) from None
    return client


class DockerImageBuilder:
    """The Docker engine, as far as building and shipping images goes (``mlctl.ports.ImageBuilder``)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    @classmethod
    def connect(cls, timeout: float = 600.0) -> DockerImageBuilder:
        return cls(_client(timeout))

    def close(self) -> None:
        self.client.close()

    def operating_system(self) -> str:
        return str(self.client.info().get("OperatingSystem", ""))

    # --- local images ---------------------------------------------------------------------------------

    def inspect(self, ref: str) -> LocalImage | None:
        from docker.errors import ImageNotFound

        try:
            data = self.client.api.inspect_image(ref)
        except ImageNotFound:
            return None
        return _local_image(data)

    def list_images(self, label: str) -> list[LocalImage]:
        """Local images carrying ``label`` (``key`` or ``key=value``).

        An image removed between the listing and its inspection (by another client of the engine) is left out.
        """
        found = (self.inspect(i["Id"]) for i in self.client.api.images(filters={"label": label}))
        return [image for image in found if image is not None]

    def tag(self, image: str, repository: str, tag: str) -> None:
        self.client.api.tag(image, repository, tag)

    def remove(self, ref: str) -> None:
        from docker.errors import APIError

        try:
            self.client.api.remove_image(ref, noprune=False)
        except APIError as exc:
            raise BuildError(f"cannot remove {ref}: {exc.explanation or exc}") from None

    def _remove_steps(self, images: list[str]) -> None:
        """Remove a failed build's own step images.

        Remove a failed build's own step images, newest first; one that another build now stands
        on (it found it in the cache meanwhile) is left to that build.
        """
        from docker.errors import APIError

        for image in reversed(images):
            with contextlib.suppress(APIError):
                self.client.api.remove_image(image, noprune=True)

    def containers_using(self, image_id: str) -> list[str]:
        return [c["Names"][0].lstrip("/") for c in self.client.api.containers(all=True, filters={"ancestor": image_id})]

    # --- building -------------------------------------------------------------------------------------

    def build(
        self,
        context: bytes,
        *,
        tag: str | None,
        buildargs: dict[str, str],
        nocache: bool = False,
        platform: str | None = None,
        on_line: LineHandler | None = None,
    ) -> tuple[str, BuildLog]:
        """Build from a tar ``context`` (with its Dockerfile) and tag it; returns the image ID.

        The build runs with the host's network so that RUN steps reach the wheelhouse mlctl serves on
        127.0.0.1; nothing else in the Dockerfiles uses the network.

        Raises:
            BuildError: naming the failing step and its last log lines. The step images the build
                committed before it failed are removed (the cached ones it reused stay).
        """
        log = BuildLog()
        try:
            return self._build(context, log, tag, buildargs, nocache, platform, on_line)
        except BuildError:
            self._remove_steps(log.created)
            raise

    def _build(
        self,
        context: bytes,
        log: BuildLog,
        tag: str | None,
        buildargs: dict[str, str],
        nocache: bool,
        platform: str | None,
        on_line: LineHandler | None,
    ) -> tuple[str, BuildLog]:
        from docker.errors import APIError

        image_id = None
        instruction, cached = "", False
        try:
            stream = self.client.api.build(
                fileobj=io.BytesIO(context),
                custom_context=True,
                tag=tag,
                buildargs=buildargs,
                nocache=nocache,
                rm=True,
                forcerm=True,
                pull=False,
                network_mode="host",
                platform=platform,
                decode=True,
            )
            for event in stream:
                if "error" in event:
                    detail = _ANSI.sub("", str(event.get("error", ""))).strip()
                    code = re.search(r"returned a non-zero code: (\d+)", detail)
                    what = (
                        f"exited with status {code.group(1)}"
                        if code
                        else detail.splitlines()[-1]
                        if detail
                        else "failed"
                    )
                    lines = [line for line in log.lines if not line.startswith(("---> ", "Removing intermediate"))]
                    raise BuildError(
                        f"{tag or 'an image'}: {log.step or 'the build'} {what}",
                        hint=("its last lines:\n    " + "\n    ".join(lines[-10:])) if lines else None,
                    )
                if "aux" in event and "ID" in event["aux"]:
                    image_id = event["aux"]["ID"]
                text = event.get("stream")
                if not text:
                    continue
                text = _ANSI.sub("", text)
                for line in text.rstrip("\n").splitlines():
                    step = re.match(r"Step (\d+)/(\d+) : (.*)", line)
                    committed = re.fullmatch(r"\s*---> ([0-9a-f]{12,64})\s*", line)
                    if step:
                        log.step_index, log.step_count = int(step.group(1)), int(step.group(2))
                        log.step = f"step {step.group(1)}/{step.group(2)} ({step.group(3)[:80]})"
                        instruction, cached = step.group(3).split(" ", 1)[0].upper(), False
                    elif line.strip() == "---> Using cache":
                        log.cached_steps += 1
                        cached = True
                    elif committed and not cached and instruction != "FROM":
                        log.created.append(committed.group(1))
                    if line.strip():
                        log.lines.append(line)
                        if on_line:
                            on_line(line, log)
        except APIError as exc:
            raise BuildError(f"the engine refused the build: {exc.explanation or exc}") from None
        if image_id is None:
            found = self.inspect(tag) if tag else None
            if found is None:
                raise BuildError(f"the build of {tag or 'an image'} ended without an image")
            image_id = found.id
        return image_id, log

    # --- running a command in an image ----------------------------------------------------------------

    def run(
        self,
        image: str,
        argv: Sequence[str],
        *,
        mounts: Mapping[str, str],
        workdir: str,
        env: Mapping[str, str],
        user: str,
        labels: Mapping[str, str],
        on_line: Callable[[str], None] | None = None,
    ) -> tuple[int, str]:
        """Run ``argv`` to its end in a new container of ``image``, then remove the container.

        Returns the exit status (127 when the program cannot be found, as a shell says) and the last
        40 lines of output. Ctrl-C removes the container too.
        """
        from docker.errors import APIError

        api = self.client.api
        binds = {source: {"bind": target, "mode": "rw"} for source, target in mounts.items()}
        host_config = api.create_host_config(binds=binds)
        container = api.create_container(
            image,
            command=list(argv),
            working_dir=workdir,
            user=user,
            environment=dict(env),
            labels=dict(labels),
            host_config=host_config,
        )["Id"]
        lines: deque[str] = deque(maxlen=40)
        try:
            try:
                api.start(container)
            except APIError as exc:
                explanation = str(exc.explanation or exc)
                if "executable file not found" in explanation or "no such file or directory" in explanation:
                    return 127, explanation
                raise BuildError(f"the engine could not start {argv[0]} in {image[:19]}: {explanation}") from None
            pending = ""
            for chunk in api.logs(container, stream=True, follow=True):
                pending += chunk.decode(errors="replace")
                *complete, pending = pending.split("\n")
                for line in complete:
                    lines.append(line)
                    if on_line:
                        on_line(line)
            if pending:
                lines.append(pending)
                if on_line:
                    on_line(pending)
            status = int(api.wait(container).get("StatusCode", 1))
        finally:
            with contextlib.suppress(APIError):
                api.remove_container(container, force=True)
        return status, "\n".join(lines)

    # --- registries -----------------------------------------------------------------------------------

    def pull(self, ref: str) -> None:
        """Pull ``ref``.

        Raises:
            NotFoundError: the registry answered that it has no such image (or needs a login to say).
            ClusterError: the registry cannot be reached, or refused otherwise.
        """
        from docker.errors import APIError

        image = ImageRef.parse(ref, source="pull")
        try:
            for event in self.client.api.pull(image.repository, tag=image.tag or "latest", stream=True, decode=True):
                if "error" in event:
                    raise _pull_error(ref, str(event["error"]), None)
        except APIError as exc:
            raise _pull_error(ref, str(exc.explanation or exc), exc.status_code) from None

    def import_image(self, tarball: str, repository: str, tag: str, changes: list[str]) -> str:
        """``docker import``: a root file system tarball as an image, with Dockerfile ``changes``; its ID."""
        from docker.errors import APIError

        try:
            self.client.api.import_image(src=tarball, repository=repository, tag=tag, changes=changes)
        except APIError as exc:
            raise BuildError(f"the engine refused to import {repository}:{tag}: {exc.explanation or exc}") from None
        found = self.inspect(f"{repository}:{tag}")
        if found is None:
            raise BuildError(f"the import of {repository}:{tag} ended without an image")
        return found.id

    def probe(self, image: str, command: list[str], *, timeout: float = 300.0) -> tuple[int, str]:
        """Run ``command`` in a throwaway container of ``image``, without network; its status and output.

        The command's first word replaces the image's entrypoint. A command that cannot start (no
        such file in the image) gives status 127 and the engine's reason.
        """
        from docker.errors import APIError
        from requests.exceptions import ConnectionError as EngineGone
        from requests.exceptions import ReadTimeout

        api = self.client.api
        container = api.create_container(
            image,
            entrypoint=command[:1],
            command=command[1:],
            network_disabled=True,
            host_config=api.create_host_config(network_mode="none"),
        )
        try:
            try:
                api.start(container)
            except APIError as exc:
                return 127, str(exc.explanation or exc)
            try:
                status = int(api.wait(container, timeout=timeout).get("StatusCode", 1))
            except (ReadTimeout, EngineGone):  # the engine's answer did not come within the timeout
                raise BuildError(
                    f"{' '.join(command)} in {image} did not finish within {timeout:.0f} s; the container was removed"
                ) from None
            output = api.logs(container, stdout=True, stderr=True)
            return status, bytes(output).decode("utf-8", errors="replace")
        finally:
            with contextlib.suppress(APIError):
                api.remove_container(container, force=True)

    def remote_exists(self, ref: str) -> bool:
        """Whether the registry has ``ref`` (the engine asks it, with the engine's credentials)."""
        from docker.errors import APIError, NotFound

        try:
            self.client.images.get_registry_data(ref)
            return True
        except NotFound:
            return False
        except APIError as exc:
            if exc.status_code in (401, 403, 404) or "manifest unknown" in str(exc).lower():
                return False
            raise ClusterError(f"cannot ask the registry about {ref}: {exc.explanation or exc}") from None

    def push(self, ref: str, on_status: Callable[[str], None] | None = None) -> PushReport:
        """Push ``ref`` with the credentials of the Docker config (``docker login``)."""
        from docker.errors import APIError

        image = ImageRef.parse(ref, source="push")
        repository, tag = image.repository, image.tag or "latest"
        statuses: dict[str, str] = {}
        progress: dict[str, int] = {}
        digest = None
        try:
            for event in self.client.api.push(repository, tag=tag, stream=True, decode=True):
                if "error" in event:
                    message = str(event["error"])
                    hint = "log in with `docker login " + repository.split("/")[0] + "`" if "auth" in message else None
                    raise ClusterError(f"push of {ref} failed: {message}", hint=hint)
                if "aux" in event and "Digest" in event["aux"]:
                    digest = event["aux"]["Digest"]
                layer, status = event.get("id"), event.get("status", "")
                if layer and status:
                    detail = event.get("progressDetail") or {}
                    if status == "Pushing" and detail.get("total"):
                        progress[layer] = max(progress.get(layer, 0), int(detail["total"]))
                    if status in ("Pushed", "Layer already exists") or status.startswith("Mounted from"):
                        statuses[layer] = status
                        if on_status:
                            on_status(f"{layer}: {status}")
        except APIError as exc:
            raise ClusterError(f"push of {ref} failed: {exc.explanation or exc}") from None
        pushed = sum(progress.get(layer, 0) for layer, status in statuses.items() if status == "Pushed")
        return PushReport(digest, statuses, pushed)


def _pull_error(ref: str, message: str, status: int | None) -> ClusterError | NotFoundError:
    """A pull's failure as an error of mlctl's.

    A registry that says "no such image" (404, manifest unknown, pull access denied) means a wrong
    name; anything else (DNS, a refused connection, TLS, 5xx) is a registry that cannot be reached.
    """
    lowered = message.lower()
    missing = status == 404 or any(
        words in lowered
        for words in ("manifest unknown", "not found", "repository does not exist", "pull access denied")
    )
    if missing:
        return NotFoundError(f"cannot pull {ref}: {message}")
    return ClusterError(f"cannot pull {ref}: {message}")


def _local_image(data: dict[str, Any]) -> LocalImage:
    config = data.get("Config") or {}
    return LocalImage(
        id=str(data["Id"]),
        tags=tuple(data.get("RepoTags") or ()),
        labels=dict(config.get("Labels") or {}),
        diff_ids=tuple((data.get("RootFS") or {}).get("Layers") or ()),
        config={k: config.get(k) for k in ("Env", "Entrypoint", "Cmd", "User", "WorkingDir")},
        size=int(data.get("Size") or 0),
        created=str(data.get("Created", "")),
        repo_digests=tuple(data.get("RepoDigests") or ()),
    )


def build_context(files: Iterable[tuple[str, bytes, int]]) -> bytes:
    """A tar build context, the same bytes for the same files.

    A tar build context from ``(path, content, mode)``; fixed owner and times, so equal inputs give
    equal bytes (the builder's COPY cache keys on content and metadata).
    """
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, content, mode in files:
            info = tarfile.TarInfo(path)
            info.size = len(content)
            info.mode = mode
            info.mtime = 0
            info.uid = info.gid = 0
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def dockerignore_filter(root: str, patterns: list[str]) -> Callable[[str], bool]:
    """A predicate: is this path left out by .dockerignore?

    A predicate: is this path (relative to ``root``) excluded by .dockerignore ``patterns``?
    Uses docker-py's implementation of Docker's own matching rules.
    """
    from docker.utils.build import PatternMatcher

    matcher = PatternMatcher(patterns)
    return lambda path: bool(matcher.matches(path))


@dataclass(frozen=True)
class ContainerState:
    """A container as the engine reports it."""

    name: str
    id: str
    image: str
    #: created, running, restarting, exited, dead...
    status: str
    exit_code: int
    oom_killed: bool
    labels: dict[str, str]
    #: The host address a container port is published on, e.g. {"8080/tcp": "127.0.0.1:8080"}.
    ports: dict[str, str]
    started_at: str
    #: The image's HEALTHCHECK as the engine last ran it: starting, healthy, unhealthy ("" without one).
    health: str = ""


class Containers:
    """Containers on the local Docker engine, as far as running a service goes."""

    def __init__(self, client: Any) -> None:
        self.client = client

    @classmethod
    def connect(cls, timeout: float = 60.0) -> Containers:
        return cls(_client(timeout))

    def close(self) -> None:
        self.client.close()

    def image_exists(self, ref: str) -> bool:
        from docker.errors import ImageNotFound

        try:
            self.client.api.inspect_image(ref)
        except ImageNotFound:
            return False
        return True

    def image_labels(self, ref: str) -> dict[str, str] | None:
        """The labels of the image ``ref`` names on this engine, or None when the engine has no such image."""
        from docker.errors import ImageNotFound

        try:
            data = self.client.api.inspect_image(ref)
        except ImageNotFound:
            return None
        return dict((data.get("Config") or {}).get("Labels") or {})

    def has_gpus(self) -> bool:
        """Whether the engine can hand GPUs to containers (the NVIDIA container runtime is installed)."""
        return "nvidia" in (self.client.info().get("Runtimes") or {})

    def run(
        self,
        image: str,
        *,
        name: str,
        env: dict[str, str],
        ports: dict[str, tuple[str, int | None]],
        labels: dict[str, str],
        shm_size: int,
        mem_limit: int,
        gpus: int = 0,
        read_only: bool = True,
        tmpfs: dict[str, str] | None = None,
        command: list[str] | None = None,
        network: str | None = None,
    ) -> ContainerState:
        """Start ``image`` detached; ``gpus`` > 0 asks the engine for that many NVIDIA GPUs.

        A port published on host port None gets a free one (``ContainerState.ports`` says which).
        """
        docker = _sdk()
        from docker.errors import APIError

        requests = [docker.types.DeviceRequest(count=gpus, capabilities=[["gpu"]])] if gpus else None
        try:
            container = self.client.containers.run(
                image,
                name=name,
                detach=True,
                environment=env,
                ports=ports,
                labels=labels,
                shm_size=shm_size,
                mem_limit=mem_limit,
                memswap_limit=mem_limit,  # no swap: an over-limit server is OOM-killed, as in a pod
                device_requests=requests,
                read_only=read_only,
                tmpfs=tmpfs or {},
                init=True,  # signals reach the server as they would from the kubelet
                command=command,
                network=network,
            )
        except APIError as exc:
            explanation = str(exc.explanation or exc)
            if "port is already allocated" in explanation or "address already in use" in explanation:
                raise ConflictError(f"cannot start {name}: {explanation}", hint="pick another --port") from None
            raise EnvironmentProblem(f"the Docker engine refused to start {name}: {explanation}") from None
        state = self.state(container.name)
        assert state is not None
        return state

    def state(self, name: str) -> ContainerState | None:
        from docker.errors import NotFound

        try:
            data = self.client.api.inspect_container(name)
        except NotFound:
            return None
        state = data.get("State") or {}
        ports = {
            port: f"{bound[0]['HostIp']}:{bound[0]['HostPort']}"
            for port, bound in ((data.get("NetworkSettings") or {}).get("Ports") or {}).items()
            if bound
        }
        return ContainerState(
            name=str(data.get("Name", "")).lstrip("/"),
            id=str(data.get("Id", "")),
            image=str((data.get("Config") or {}).get("Image", "")),
            status=str(state.get("Status", "")),
            exit_code=int(state.get("ExitCode") or 0),
            oom_killed=bool(state.get("OOMKilled")),
            labels=dict((data.get("Config") or {}).get("Labels") or {}),
            ports=ports,
            started_at=str(state.get("StartedAt", "")),
            health=str((state.get("Health") or {}).get("Status", "")),
        )

    def find(self, label: str) -> list[ContainerState]:
        """Containers (running or not) carrying ``label`` (``key`` or ``key=value``)."""
        found = self.client.api.containers(all=True, filters={"label": label})
        states = [self.state(c["Id"]) for c in found]
        return [s for s in states if s is not None]

    def logs(self, name: str, tail: int | None = None) -> str:
        data = self.client.api.logs(name, stdout=True, stderr=True, tail=tail if tail is not None else "all")
        return bytes(data).decode("utf-8", errors="replace")

    def follow(self, name: str, tail: int | None = None) -> Iterable[str]:
        stream = self.client.api.logs(
            name, stdout=True, stderr=True, stream=True, follow=True, tail=tail if tail is not None else "all"
        )
        buffer = b""
        for chunk in stream:
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                yield line.decode("utf-8", errors="replace")
        if buffer:
            yield buffer.decode("utf-8", errors="replace")

    def address(self, name: str, network: str) -> str:
        """The container's IP address on ``network``."""
        data = self.client.api.inspect_container(name)
        return str(((data.get("NetworkSettings") or {}).get("Networks") or {})[network]["IPAddress"])

    def exec(self, name: str, command: list[str]) -> int:
        """Run ``command`` in the running container (as its own user); its exit code."""
        created = self.client.api.exec_create(name, command)
        self.client.api.exec_start(created["Id"])
        return int(self.client.api.exec_inspect(created["Id"]).get("ExitCode") or 0)

    def ensure_network(self, name: str, labels: dict[str, str]) -> None:
        """A bridge network of that name (made, labelled, when there is none)."""
        if not self.client.api.networks(names=[name]):
            self.client.api.create_network(name, driver="bridge", labels=labels)

    def remove_network(self, name: str) -> None:
        from docker.errors import NotFound

        for network in self.client.api.networks(names=[name]):
            if network.get("Name") == name:
                with contextlib.suppress(NotFound):
                    self.client.api.remove_network(network["Id"])

    def stop(self, name: str, timeout: int) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; then remove the container."""
        from docker.errors import NotFound

        try:
            self.client.api.stop(name, timeout=timeout)
        except NotFound:
            return
        with contextlib.suppress(NotFound):  # removed meanwhile: the same end
            self.client.api.remove_container(name, force=True)


@dataclass(frozen=True)
class StoredLogin:
    """A registry login that ``docker login`` stored."""

    username: str
    secret: str
    #: Where it came from: "config.json" or the credential helper's name.
    source: str


def stored_login(host: str) -> StoredLogin | None:
    """The login ``docker login HOST`` stored ($DOCKER_CONFIG/config.json, or a credential helper), if any."""
    import base64
    import json
    import subprocess

    path = os.path.join(os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker"), "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    keys = [host, f"https://{host}", f"http://{host}"]
    if host in ("registry-1.docker.io", "docker.io", "index.docker.io"):
        keys.insert(0, "https://index.docker.io/v1/")
    helper = next((config.get("credHelpers", {}).get(k) for k in keys if k in config.get("credHelpers", {})), None)
    auths = config.get("auths") or {}
    entry = next((auths[k] for k in keys if k in auths), None)
    if entry and entry.get("auth"):
        try:
            username, _, secret = base64.b64decode(entry["auth"]).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return StoredLogin(username, secret, "config.json")
    helper = helper or (config.get("credsStore") if entry is not None or not auths else None)
    if not helper:
        return None
    for key in keys:
        try:
            done = subprocess.run(
                [f"docker-credential-{helper}", "get"], input=key, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode == 0:
            try:
                found = json.loads(done.stdout)
            except ValueError:
                return None
            return StoredLogin(str(found.get("Username", "")), str(found.get("Secret", "")), helper)
    return None
