"""The only module that imports the official Kubernetes client."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from mlctl.errors import ClusterError, EnvironmentProblem


@dataclass(frozen=True)
class ClusterInfo:
    context: str
    server: str
    version: str | None


def cluster_info(context: str | None = None, timeout: float = 3.0) -> ClusterInfo:
    """Load the kube context (or in-cluster config) and ask the API server for its version.

    Raises:
        EnvironmentProblem: no kubeconfig or no such context.
        ClusterError: the API server is unreachable or refuses us.
    """
    import urllib3
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    if context is None and "KUBERNETES_SERVICE_HOST" in os.environ and not os.environ.get("KUBECONFIG"):
        try:
            config.load_incluster_config(client_configuration=configuration)
            name = "in-cluster"
        except ConfigException as exc:
            raise EnvironmentProblem(f"in-cluster config failed: {exc}") from None
    else:
        # Read KUBECONFIG now: the client library reads it once, at import.
        path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        try:
            _, active = config.list_kube_config_contexts(config_file=path)
            name = context or active["name"]
            config.load_kube_config(config_file=path, context=name, client_configuration=configuration)
        except (ConfigException, TypeError) as exc:
            raise EnvironmentProblem(
                f"no usable kubeconfig: {str(exc).splitlines()[0]}",
                hint="set KUBECONFIG or create ~/.kube/config (your platform team has one for you)",
            ) from None
    configuration.retries = 0
    api = client.ApiClient(configuration)
    try:
        # Raw JSON: servers differ in which optional version fields they fill in.
        response: Any = client.VersionApi(api).get_code(_request_timeout=timeout, _preload_content=False)
        version = json.loads(response.data).get("gitVersion")
        return ClusterInfo(name, configuration.host, str(version) if version else None)
    except ApiException as exc:
        raise ClusterError(f"the API server at {configuration.host} answered {exc.status} {exc.reason}") from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        reason = str(getattr(exc, "reason", exc)).split(": ")[-1]
        raise ClusterError(f"cannot reach the API server at {configuration.host}: {reason}") from None
    except ValueError as exc:
        raise ClusterError(f"the API server at {configuration.host} sent an unreadable version: {exc}") from None
    finally:
        api.close()
