"""The only module that imports the Helm engine (helm-python-sdk: Helm v4's Go SDK, in-process).

``HelmReleases`` implements ``mlctl.ports.Releases``, the narrow interface deploys use: install,
upgrade, rollback, uninstall, history, status and the live manifest of a release of one chart.
Releases are ordinary Helm releases (Secrets in the release's namespace), so ``helm list`` and
``helm rollback`` work for the platform team too.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlctl.errors import ClusterError, EnvironmentProblem, InputError, MlctlError
from mlctl.ports import FAILED, UNVERIFIED, Revision

if TYPE_CHECKING:
    from mlctl.adapters.kube import KubeCluster


def _helm() -> Any:
    try:
        import helm_python
    except ImportError:
        raise EnvironmentProblem(
            "the Helm engine (helm-python-sdk) is not installed",
            hint="pip install helm-python-sdk (Linux x86_64 wheels only)",
        ) from None
    except OSError as exc:  # the shared library failed to load
        raise EnvironmentProblem(f"the Helm engine failed to load: {exc}") from None
    return helm_python


def engine_version() -> str:
    """The Helm SDK version inside helm-python-sdk, e.g. ``v4.2.3 (helm-python-sdk 0.2.2)``."""
    helm = _helm()
    return f"{helm.helm_sdk_version()} (helm-python-sdk {helm.__version__})"


class ValuesError(InputError):
    """Chart values the chart refuses; ``problems`` lists every one."""

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message, hint="the values come from mlctl.yaml and --values/--set; `mlctl render` shows them")
        self.problems = problems

    def lines(self) -> list[str]:
        return [self.message, *(f"  {p}" for p in self.problems)]

    def to_data(self) -> dict[str, Any]:
        """The error, with every values problem ("key.path: why")."""
        return {**super().to_data(), "problems": list(self.problems)}


def values_error(exc: Exception) -> MlctlError:
    """Helm's schema and template failures as one error listing every problem."""
    text = str(exc)
    schema = re.findall(r"^- at '([^']*)': (.+)$", text, re.M)
    if schema:
        problems = [f"{path.strip('/').replace('/', '.') or '(top level)'}: {why}" for path, why in schema]
        return ValuesError(f"the chart values fail its schema ({_count(problems)})", problems)
    listed = re.findall(r"^\s+- (.+)$", text.split("values are invalid:", 1)[-1], re.M)
    if "values are invalid:" in text and listed:
        return ValuesError(f"the chart values are invalid ({_count(listed)})", listed)
    return ValuesError("the chart failed to render", [text.strip().splitlines()[-1]])


def _count(problems: list[str]) -> str:
    return f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"


def load_chart(path: Path) -> Any:
    """The chart at ``path``, loaded by the Helm engine (close it after use)."""
    return _helm().Chart.load(str(path))


def render_chart(path: Path, values: dict[str, Any], *, release: str, namespace: str) -> tuple[str, dict[str, str]]:
    """Render a chart offline: its version and template path -> manifest. Values problems raise ValuesError."""
    helm = _helm()
    chart = load_chart(path)
    try:
        return chart.version, chart.render(values, name=release, namespace=namespace, is_install=True)
    except (helm.HelmValuesError, helm.HelmRenderError) as exc:
        raise values_error(exc) from None
    finally:
        chart.close()


def parse_set(item: str) -> dict[str, Any]:
    """Helm's ``--set`` syntax (``a.b=1,c[0]=x``) as a values mapping."""
    helm = _helm()
    try:
        parsed: dict[str, Any] = helm.parse_set_string(item)
    except helm.HelmError as exc:
        raise InputError(f"--set {item}: {str(exc).strip().splitlines()[-1]}") from None
    return parsed


def lint(path: Path, values: dict[str, Any], kube_version: str | None = None) -> dict[str, Any]:
    """``helm lint --strict`` of the chart at ``path`` with ``values``: Helm's report."""
    report: dict[str, Any] = _helm().lint(str(path), values, strict=True, kube_version=kube_version)
    return report


#: Revisions Helm keeps per release (each is a Secret in the namespace): enough to roll back a while.
MAX_HISTORY = 10
#: The release label saying how mlctl saw a revision's rollout go (Helm keeps custom release labels on its
#: record, copies them to the next revision, and ``helm get metadata`` shows them).
ROLLOUT_LABEL = "mlctl.rollout"
#: Helm refuses longer descriptions (action.MaxDescriptionLength).
MAX_DESCRIPTION = 512


class HelmReleases:
    """Helm releases of the chart at ``chart`` on one cluster (kubeconfig and context) and namespace."""

    def __init__(
        self,
        chart: Path,
        *,
        namespace: str,
        kubeconfig: str | None = None,
        context: str | None = None,
        records: KubeCluster | None = None,
    ) -> None:
        helm = _helm()
        self.namespace = namespace
        self._helm = helm
        self._chart_path = chart
        self._chart: Any = None
        self._config = helm.Config(kubeconfig_path=kubeconfig, kube_context=context, namespace=namespace)
        #: The Kubernetes API holding Helm's release records (Secrets), for ``mark``.
        self._records = records

    def _loaded_chart(self) -> Any:
        if self._chart is None:
            self._chart = load_chart(self._chart_path)
        return self._chart

    def close(self) -> None:
        if self._chart is not None:
            self._chart.close()
        self._config.close()

    def _call(self, action: str, release: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._helm.HelmKubeError as exc:
            raise ClusterError(f"helm {action} {release}: {_cluster_reason(str(exc))}") from None
        except (self._helm.HelmValuesError, self._helm.HelmRenderError) as exc:
            raise values_error(exc) from None
        except self._helm.HelmReleaseError as exc:
            message = str(exc).strip()
            if "forbidden" in message.lower():
                raise ClusterError(f"helm {action} {release}: {_forbidden(message)}") from None
            raise MlctlError(f"helm {action} {release} failed: {message.splitlines()[-1]}") from None
        except self._helm.HelmError as exc:
            raise MlctlError(f"helm {action} {release} failed: {str(exc).strip().splitlines()[-1]}") from None

    def history(self, release: str) -> list[Revision]:
        """The release's revisions, oldest first; empty when there is no such release."""
        try:
            entries = self._config.history(release)
        except self._helm.HelmNotFoundError:
            return []
        except self._helm.HelmKubeError as exc:
            raise ClusterError(f"helm history {release}: {_cluster_reason(str(exc))}") from None
        except self._helm.HelmError as exc:
            raise MlctlError(f"helm history {release} failed: {exc}") from None
        return sorted((_revision(entry) for entry in entries), key=lambda r: r.revision)

    def description(self, release: str, revision: int) -> str:
        """What Helm wrote for one revision: "Install complete", "Rollback to 1", mlctl's own words..."""
        found = self._call("get", release, self._config.get_all, release, revision=revision)
        return str((found.get("info") or {}).get("description", ""))

    def manifest(self, release: str, revision: int | None = None) -> str:
        """The manifests Helm applied for the revision (default: the latest)."""
        found = self._call("get manifest", release, self._config.status, release, revision=revision)
        return str(found.get("manifest", ""))

    def preview(self, release: str, values: Mapping[str, Any], *, upgrade: bool) -> str:
        """The manifests an install or upgrade would apply now (a server-side dry run).

        The manifests an install or upgrade would apply now: a server-side dry run, so that the
        chart sees the cluster's real capabilities (which APIs exist) and nothing is changed.
        """
        action = self._config.upgrade if upgrade else self._config.install
        found = self._call("dry-run", release, action, self._loaded_chart(), release, dict(values), dry_run="server")
        return str(found.get("manifest", ""))

    def install(self, release: str, values: Mapping[str, Any], *, timeout: int, description: str) -> int:
        """Install without waiting (mlctl follows the rollout itself); returns the revision."""
        options = {"timeout": timeout, "description": description, "labels": {ROLLOUT_LABEL: UNVERIFIED}}
        result = self._call(
            "install", release, self._config.install, self._loaded_chart(), release, dict(values), **options
        )
        return int(result["revision"])

    def upgrade(self, release: str, values: Mapping[str, Any], *, timeout: int, description: str) -> int:
        """Upgrade without waiting, keeping the last MAX_HISTORY revisions; returns the new revision."""
        options = {
            "timeout": timeout,
            "description": description,
            "max_history": MAX_HISTORY,
            "labels": {ROLLOUT_LABEL: UNVERIFIED},  # not the previous revision's verdict, which Helm would copy
        }
        result = self._call(
            "upgrade", release, self._config.upgrade, self._loaded_chart(), release, dict(values), **options
        )
        return int(result["revision"])

    def rollback(self, release: str, revision: int | None, *, timeout: int) -> None:
        self._call("rollback", release, self._config.rollback, release, version=revision, timeout=timeout)

    def uninstall(self, release: str, *, timeout: int) -> None:
        self._call("uninstall", release, self._config.uninstall, release, timeout=timeout, wait="watcher")

    def mark(self, release: str, revision: int, outcome: str, *, description: str | None = None) -> None:
        """Record a rollout's outcome in Helm's own record of the revision (its Secret), as Helm itself would.

        Helm keeps each revision as a Secret ``sh.helm.release.v1.NAME.vN`` labelled with its status, holding
        the release (gzipped JSON, base64) whose ``info.status`` and ``info.description`` ``helm history``
        shows. A failed rollout gets what Helm's own ``--wait`` gives one (status ``failed``, both in the record
        and the label), so that Helm's rollback leaves it failed; every outcome is also the release label
        ``mlctl.rollout``. The write carries the Secret's resourceVersion, so it never overwrites a change made
        meanwhile (it reads again and retries).

        Raises:
            MlctlError: no record of that revision (or no access to it).
        """
        if self._records is None:
            raise MlctlError(f"cannot record the rollout of {release} revision {revision}: no access to Helm's records")
        name = f"sh.helm.release.v1.{release}.v{revision}"
        for _ in range(5):
            secret = self._records.secret(self.namespace, name)
            if secret is None:
                raise MlctlError(
                    f"cannot record the rollout of {release} revision {revision}: Helm's record {name} is gone"
                )
            labels = dict((secret.get("metadata") or {}).get("labels") or {})
            data = dict(secret.get("data") or {})
            if outcome == FAILED or description:
                record = decode_record(data["release"])
                info = record.setdefault("info", {})
                if outcome == FAILED:
                    info["status"] = labels["status"] = "failed"
                if description:
                    info["description"] = description[:MAX_DESCRIPTION]
                data["release"] = encode_record(record)
            labels[ROLLOUT_LABEL] = outcome
            labels["modifiedAt"] = str(int(time.time()))  # as Helm's own updates stamp it
            secret = {**secret, "data": data, "metadata": {**secret["metadata"], "labels": labels}}
            if self._records.replace_secret(self.namespace, name, secret):
                return
        raise MlctlError(f"cannot record the rollout of {release} revision {revision}: its record keeps changing")


def decode_record(data: str) -> dict[str, Any]:
    """A Helm release record, from its Secret's ``data.release``.

    The field holds base64 (Kubernetes') of base64 (Helm's) of the gzipped JSON (storage/driver/util.go,
    decodeRelease; records from before compression are plain JSON).
    """
    raw = base64.b64decode(base64.b64decode(data))
    if raw[:3] == b"\x1f\x8b\x08":
        raw = gzip.decompress(raw)
    record: dict[str, Any] = json.loads(raw)
    return record


def encode_record(record: dict[str, Any]) -> str:
    """A release record as its Secret's ``data.release`` holds it, as Helm writes it (encodeRelease)."""
    packed = gzip.compress(json.dumps(record, separators=(",", ":")).encode(), compresslevel=9)
    return base64.b64encode(base64.b64encode(packed)).decode()


def _revision(entry: dict[str, Any]) -> Revision:
    # helm-python-sdk's release summary: name, namespace, revision, status, deployed_at, chart_name,
    # chart_version, app_version, labels, notes, manifest.
    return Revision(
        revision=int(entry["revision"]),
        status=str(entry.get("status", "")),
        updated=str(entry.get("deployed_at", "")),
        chart=f"{entry.get('chart_name', '')}-{entry.get('chart_version', '')}",
        app_version=str(entry.get("app_version", "")),
        rollout=str((entry.get("labels") or {}).get(ROLLOUT_LABEL, "")),
    )


def _cluster_reason(text: str) -> str:
    reason = text.strip().splitlines()[-1]
    return reason.replace("cluster reachability check failed: ", "")


def _forbidden(text: str) -> str:
    found = re.search(r'(\S+ "[^"]*" is forbidden: .*?)(?:$|\n)', text)
    return found.group(1) if found else text.strip().splitlines()[-1]
