"""The Kubernetes emulator against the real clients: Helm v4 (helm_python) and the official Python client."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import helm_python as helm
import pytest
from kube.emulator import FakeCluster
from kubernetes import client, config, watch

T = TypeVar("T")

CHART = {
    "Chart.yaml": "apiVersion: v2\nname: demo\nversion: 0.1.0\n",
    "values.yaml": "image: registry.example.com/demo:1.0\nreplicas: 1\nprogressDeadlineSeconds: 600\n",
    "templates/deployment.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  labels:
    app.kubernetes.io/instance: {{ .Release.Name }}
spec:
  replicas: {{ .Values.replicas }}
  progressDeadlineSeconds: {{ .Values.progressDeadlineSeconds }}
  selector:
    matchLabels:
      app.kubernetes.io/instance: {{ .Release.Name }}
  template:
    metadata:
      labels:
        app.kubernetes.io/instance: {{ .Release.Name }}
    spec:
      containers:
        - name: server
          image: {{ .Values.image }}
          ports:
            - name: http
              containerPort: 8080
""",
    "templates/service.yaml": """\
apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}
spec:
  selector:
    app.kubernetes.io/instance: {{ .Release.Name }}
  ports:
    - port: 80
      targetPort: http
""",
    "templates/extras.yaml": """\
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ .Release.Name }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}
data:
  MODEL: resnet50
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {{ .Release.Name }}
spec:
  rules:
    - host: demo.example.com
      http:
        paths:
          - path: /
            pathType: Prefix
            backend:
              service:
                name: {{ .Release.Name }}
                port:
                  number: 80
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ .Release.Name }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ .Release.Name }}
  maxReplicas: 3
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: 80
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .Release.Name }}
spec:
  maxUnavailable: 1
  selector:
    matchLabels:
      app.kubernetes.io/instance: {{ .Release.Name }}
""",
}
KINDS = (
    "deployments",
    "replicasets",
    "pods",
    "services",
    "secrets",
    "configmaps",
    "serviceaccounts",
    "ingresses",
    "horizontalpodautoscalers",
    "poddisruptionbudgets",
)
FORBIDDEN = (
    'deployments.apps "demo" is forbidden: User "system:serviceaccount:ci:deployer" cannot patch resource '
    '"deployments" in API group "apps" in the namespace "ml"'
)


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with FakeCluster() as fake:
        fake.add_namespace("ml")
        yield fake


@pytest.fixture
def kubeconfig(cluster: FakeCluster, tmp_path: Path) -> Path:
    return cluster.kubeconfig(tmp_path / "kubeconfig", namespace="ml")


@pytest.fixture
def api(kubeconfig: Path) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(str(kubeconfig))
    yield api_client
    api_client.close()


@pytest.fixture
def chart(tmp_path: Path) -> Path:
    root = tmp_path / "chart"
    for name, text in CHART.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture
def helm_config(kubeconfig: Path) -> Iterator[helm.Config]:
    with helm.Config(namespace="ml", kubeconfig_path=str(kubeconfig)) as cfg:
        yield cfg


def eventually(check: Callable[[], T | None], timeout: float = 5.0) -> T:
    """Poll until ``check`` returns something truthy (the controllers work asynchronously, every ~0.1 s)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.05)


def deployment(
    name: str,
    image: str = "registry.example.com/demo:1.0",
    *,
    gpus: int = 0,
    pod_spec: dict[str, Any] | None = None,
    container: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    limits = {"nvidia.com/gpu": str(gpus)} if gpus else {}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {"name": "server", "image": image, "resources": {"limits": limits}, **(container or {})}
                    ],
                    **(pod_spec or {}),
                },
            },
            **spec,
        },
    }


def pod_of(api: client.ApiClient, app: str) -> client.V1Pod:
    return eventually(
        lambda: next(iter(client.CoreV1Api(api).list_namespaced_pod("ml", label_selector=f"app={app}").items), None)
    )


def events_of(api: client.ApiClient, name: str) -> list[client.CoreV1Event]:
    return client.CoreV1Api(api).list_namespaced_event("ml", field_selector=f"involvedObject.name={name}").items


def failed_scheduling(api: client.ApiClient, app: str) -> str:
    pod = pod_of(api, app)
    event = eventually(
        lambda: next((e for e in events_of(api, pod.metadata.name) if e.reason == "FailedScheduling"), None)
    )
    assert event.type == "Warning"
    assert event.source.component == "default-scheduler"
    return str(event.message)


def raw_request(cluster: FakeCluster, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        cluster.url + path, data=json.dumps(body).encode(), method=method, headers={"Content-Type": "application/json"}
    )
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an HTTP(S)_PROXY of CI
    try:
        with direct.open(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# --- Helm -------------------------------------------------------------------------------------------------------


def test_helm_release_lifecycle(cluster: FakeCluster, helm_config: helm.Config, chart: Path) -> None:
    cluster.add_node("node-0")
    loaded = helm.Chart.load(str(chart))

    installed = helm_config.install(loaded, "demo", wait="watcher", timeout=20)
    assert installed["status"] == "deployed"
    status = cluster.objects("deployments", "ml")[0]["status"]
    assert status["availableReplicas"] == status["updatedReplicas"] == 1
    assert cluster.objects("services", "ml")[0]["spec"]["clusterIP"].startswith("10.96.")

    helm_config.upgrade(loaded, "demo", {"image": "registry.example.com/demo:2.0"}, wait="watcher", timeout=20)
    replicasets = cluster.objects("replicasets", "ml")
    revisions = {rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]: rs for rs in replicasets}
    assert revisions["2"]["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.com/demo:2.0"
    assert revisions["1"]["spec"]["replicas"] == 0
    assert [(r["revision"], r["status"]) for r in helm_config.history("demo")] == [(1, "superseded"), (2, "deployed")]

    helm_config.rollback("demo", version=1, wait="watcher", timeout=20)
    assert [(r["revision"], r["status"]) for r in helm_config.history("demo")][-1] == (3, "deployed")
    live = cluster.objects("deployments", "ml")[0]
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.com/demo:1.0"
    assert live["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"  # the old RS, re-revisioned

    helm_config.uninstall("demo", wait="watcher", timeout=20)
    for plural in KINDS:
        eventually(lambda plural=plural: not cluster.objects(plural, "ml"))


def test_helm_second_release_with_legacy_wait(
    cluster: FakeCluster, helm_config: helm.Config, chart: Path, api: client.ApiClient
) -> None:
    cluster.add_node("node-0")
    loaded = helm.Chart.load(str(chart))
    helm_config.install(loaded, "first", wait="watcher", timeout=20)
    helm_config.install(loaded, "second", {"replicas": 2}, wait="legacy", timeout=20)

    assert sorted(r["name"] for r in helm_config.list()) == ["first", "second"]
    core = client.CoreV1Api(api)
    second = core.list_namespaced_pod("ml", label_selector="app.kubernetes.io/instance=second").items
    assert len(second) == 2
    assert all(p.status.phase == "Running" and p.status.container_statuses[0].ready for p in second)
    everything = core.list_namespaced_pod("ml", label_selector="app.kubernetes.io/instance in (first,second)").items
    assert len(everything) == 3
    assert len(core.list_namespaced_pod("ml", label_selector="app.kubernetes.io/instance!=second").items) == 1
    # The HPA controller keeps its target within its bounds (here: 2 is within 1..3, so it stays).
    hpa = eventually(
        lambda: (
            (
                h := client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler("second", "ml")
            ).status.desired_replicas
            and h
        )
    )
    assert (hpa.status.current_replicas, hpa.status.desired_replicas) == (2, 2)
    # Statuses nobody writes still carry Go's zero values, as the client's models require.
    pdb = client.PolicyV1Api(api).read_namespaced_pod_disruption_budget("second", "ml")
    assert pdb.status.disruptions_allowed == 0


def test_helm_strict_validation_names_the_unknown_field(helm_config: helm.Config, chart: Path) -> None:
    template = chart / "templates" / "deployment.yaml"
    template.write_text(
        template.read_text().replace("- name: server", "- name: server\n          imagePullPolicyy: Always")
    )

    with pytest.raises(helm.HelmReleaseError) as failure:
        helm_config.install(helm.Chart.load(str(chart)), "bad")
    assert str(failure.value) == (
        "server-side apply failed for object ml/bad apps/v1, Kind=Deployment: failed to create typed patch object "
        '(ml/bad; apps/v1, Kind=Deployment): .spec.template.spec.containers[name="server"].imagePullPolicyy: '
        "field not declared in schema"
    )


def test_helm_test_hook_pod_runs_to_completion(cluster: FakeCluster, helm_config: helm.Config, chart: Path) -> None:
    cluster.add_node("node-0")
    (chart / "templates" / "test.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: smoke\n  annotations:\n    helm.sh/hook: test\n"
        "spec:\n  restartPolicy: Never\n  containers:\n    - name: curl\n      image: curl:8\n"
    )
    cluster.crash_images["curl:8"] = (0, ["HTTP/1.1 200 OK"])  # with restartPolicy Never, exit 0 is success
    helm_config.install(helm.Chart.load(str(chart)), "demo", wait="watcher", timeout=20)

    result = helm_config.test("demo", timeout=20, logs=True)
    assert "HTTP/1.1 200 OK" in result["logs"]

    cluster.crash_images["curl:8"] = (7, ["curl: (7) Failed to connect"])
    with pytest.raises(helm.HelmReleaseError, match="pod smoke failed"):
        helm_config.test("demo", timeout=20)


def test_injected_forbidden_fails_helm_before_any_change(
    cluster: FakeCluster, helm_config: helm.Config, chart: Path
) -> None:
    cluster.add_node("node-0")
    loaded = helm.Chart.load(str(chart))
    helm_config.install(loaded, "demo", wait="watcher", timeout=20)
    cluster.inject_fault("patch", "deployments", 403, "Forbidden", FORBIDDEN)

    with pytest.raises(helm.HelmReleaseError) as failure:
        helm_config.upgrade(loaded, "demo", {"image": "registry.example.com/demo:2.0"})
    assert str(failure.value) == f"server-side apply failed for object ml/demo apps/v1, Kind=Deployment: {FORBIDDEN}"
    image = cluster.objects("deployments", "ml")[0]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example.com/demo:1.0"

    helm_config.upgrade(loaded, "demo", {"image": "registry.example.com/demo:2.0"})  # the fault was for one request
    assert [r["status"] for r in helm_config.history("demo")] == ["superseded", "failed", "deployed"]


def test_injected_fault_is_a_status_object(cluster: FakeCluster, api: client.ApiClient) -> None:
    cluster.inject_fault("create", "secrets", 403, "Forbidden", 'secrets is forbidden: User "x" cannot create', times=2)
    core = client.CoreV1Api(api)
    body = {"metadata": {"name": "token"}, "stringData": {"key": "value"}}
    for _ in range(2):
        with pytest.raises(client.ApiException) as failure:
            core.create_namespaced_secret("ml", body)
        status = json.loads(failure.value.body)
        assert (failure.value.status, status["kind"], status["reason"]) == (403, "Status", "Forbidden")
        assert status["message"] == 'secrets is forbidden: User "x" cannot create'
    assert not cluster.objects("secrets", "ml")

    created = core.create_namespaced_secret("ml", body)
    assert created.data == {"key": "dmFsdWU="}  # stringData is folded into data
    assert created.metadata.uid
    assert created.metadata.resource_version
    assert created.metadata.creation_timestamp


# --- the Python client ---------------------------------------------------------------------------------------


def test_watch_deployment_until_available(cluster: FakeCluster, api: client.ApiClient) -> None:
    cluster.add_node("node-0")
    apps = client.AppsV1Api(api)
    created = apps.create_namespaced_deployment("ml", deployment("web", replicas=2))
    assert created.metadata.generation == 1

    seen = []
    stream = watch.Watch().stream(
        apps.list_namespaced_deployment, "ml", field_selector="metadata.name=web", timeout_seconds=10
    )
    for event in stream:
        status = event["object"].status
        seen.append(event["type"])
        if (status.observed_generation or 0) >= 1 and status.available_replicas == status.updated_replicas == 2:
            break
    assert seen[0] == "ADDED"
    conditions = {c.type: c.reason for c in apps.read_namespaced_deployment_status("web", "ml").status.conditions}
    assert conditions == {"Available": "MinimumReplicasAvailable", "Progressing": "NewReplicaSetAvailable"}
    pods = client.CoreV1Api(api).list_namespaced_pod("ml", label_selector="app=web").items
    assert all(p.status.pod_ip and p.status.host_ip and p.status.start_time for p in pods)
    assert {e.reason for e in events_of(api, "web")} == {"ScalingReplicaSet"}


def rollout_timeline(cluster: FakeCluster, app: str, until: Callable[[list[dict[str, Any]]], bool]) -> list[str]:
    """Each distinct state of the app's pods during a rollout, as "image:ready" per pod, until ``until`` holds."""
    seen: list[str] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        pods = [p for p in cluster.objects("pods", "ml") if p["metadata"]["labels"].get("app") == app]
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        state = " ".join(
            sorted(
                f"{p['spec']['containers'][0]['image'].rsplit(':', 1)[-1]}:"
                + (
                    "ready"
                    if any(
                        c["type"] == "Ready" and c["status"] == "True"
                        for c in p.get("status", {}).get("conditions") or []
                    )
                    else "-"
                )
                for p in live
            )
        )
        if not seen or seen[-1] != state:
            seen.append(state)
        if until(live):
            return seen
        time.sleep(0.02)
    raise AssertionError(f"the rollout did not finish: {seen}")


def ready_tags(pods: list[dict[str, Any]]) -> list[str]:
    """The image tags of the ready pods."""
    return [
        p["spec"]["containers"][0]["image"].rsplit(":", 1)[-1]
        for p in pods
        if any(c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions") or [])
    ]


def test_rolling_update_without_surge_stops_the_old_pod_first(cluster: FakeCluster, api: client.ApiClient) -> None:
    """rolling.go: with maxSurge 0 and maxUnavailable 1, the old ReplicaSet is scaled down before the new one
    grows, so a 1-replica GPU Deployment on a 1-GPU node can roll at all (with a moment of no ready pod)."""
    cluster.add_node("gpu-0", gpus=1)
    apps = client.AppsV1Api(api)
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    apps.create_namespaced_deployment(
        "ml", deployment("llm", "registry.example.com/demo:1.0", gpus=1, strategy=strategy)
    )
    rollout_timeline(cluster, "llm", lambda pods: ready_tags(pods) == ["1.0"])
    apps.patch_namespaced_deployment(
        "llm",
        "ml",
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "server", "image": "registry.example.com/demo:2.0"}]}}
            }
        },
    )

    def done(pods: list[dict[str, Any]]) -> bool:
        return (
            len(pods) == 1
            and pods[0]["spec"]["containers"][0]["image"].endswith(":2.0")
            and pods[0]["status"].get("phase") == "Running"
        )

    timeline = rollout_timeline(cluster, "llm", done)
    assert "1.0:ready 2.0:-" not in timeline  # never two GPU pods at once: the surge pod would wait forever
    assert "" in timeline or "2.0:-" in timeline  # the old pod went first
    replicasets = {
        rs["spec"]["template"]["spec"]["containers"][0]["image"]: rs for rs in cluster.objects("replicasets", "ml")
    }
    assert replicasets["registry.example.com/demo:1.0"]["spec"]["replicas"] == 0


def test_rolling_update_with_surge_starts_the_new_pod_first(cluster: FakeCluster, api: client.ApiClient) -> None:
    """rolling.go: with maxSurge 1 and maxUnavailable 0, the new pod is ready before the old one is stopped."""
    cluster.add_node("gpu-0", gpus=2)
    cluster.slow_images["registry.example.com/demo:2.0"] = 0.5  # loading its model takes a moment
    apps = client.AppsV1Api(api)
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    apps.create_namespaced_deployment(
        "ml", deployment("llm", "registry.example.com/demo:1.0", gpus=1, strategy=strategy)
    )
    rollout_timeline(cluster, "llm", lambda pods: ready_tags(pods) == ["1.0"])
    apps.patch_namespaced_deployment(
        "llm",
        "ml",
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "server", "image": "registry.example.com/demo:2.0"}]}}
            }
        },
    )

    def done(pods: list[dict[str, Any]]) -> bool:
        return [p["spec"]["containers"][0]["image"][-3:] for p in pods] == ["2.0"] and "1.0" not in str(pods)

    timeline = rollout_timeline(cluster, "llm", done)
    assert all("ready" in state for state in timeline[:-1] if state), timeline  # a ready pod all along
    assert "1.0:ready 2.0:-" in timeline  # the surge pod loads beside the old one


def test_autoscaler_holds_its_target_at_min_replicas(cluster: FakeCluster, api: client.ApiClient) -> None:
    """horizontal.go: a target below minReplicas is scaled up to it before any metric is read; the scale is a
    spec change, so the Deployment's generation moves and its controller rolls the extra replica out."""
    cluster.add_node("node-0")
    apps = client.AppsV1Api(api)
    body = deployment("web")
    del body["spec"]["replicas"]  # as a chart leaves it to the HPA
    created = apps.create_namespaced_deployment("ml", body)
    assert created.spec.replicas == 1  # defaulted by the API server
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 2,
            "maxReplicas": 4,
        },
    }
    client.AutoscalingV2Api(api).create_namespaced_horizontal_pod_autoscaler("ml", hpa)
    scaled = eventually(lambda: (d := apps.read_namespaced_deployment("web", "ml")).spec.replicas == 2 and d)
    assert scaled.metadata.generation == 2
    eventually(lambda: apps.read_namespaced_deployment_status("web", "ml").status.ready_replicas == 2)
    status = client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler("web", "ml").status
    assert (status.current_replicas, status.desired_replicas) == (2, 2)
    assert [e.message for e in events_of(api, "web") if e.reason == "SuccessfulRescale"] == [
        "New size: 2; reason: Current number of replicas below Spec.MinReplicas"
    ]


def test_generation_moves_only_when_an_apply_changes_the_spec(
    cluster: FakeCluster, helm_config: helm.Config, chart: Path
) -> None:
    """metadata.generation is bumped by a spec change, whatever the verb (here Helm's server-side apply), and
    not by an apply that changes nothing or only metadata."""
    cluster.add_node("node-0")
    loaded = helm.Chart.load(str(chart))
    helm_config.install(loaded, "demo", wait="watcher", timeout=20)

    def generation() -> int:
        return int(cluster.objects("deployments", "ml")[0]["metadata"]["generation"])

    assert generation() == 1
    helm_config.upgrade(loaded, "demo", wait="watcher", timeout=20)
    assert generation() == 1
    helm_config.upgrade(loaded, "demo", {"replicas": 2}, wait="watcher", timeout=20)
    assert generation() == 2
    assert cluster.objects("deployments", "ml")[0]["status"]["observedGeneration"] == 2


def test_watch_honours_resource_version_and_timeout(cluster: FakeCluster, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map("ml", {"metadata": {"name": "before"}})
    listed = core.list_namespaced_config_map("ml")
    core.create_namespaced_config_map("ml", {"metadata": {"name": "after"}, "data": {"a": "1"}})

    started = time.monotonic()
    events = list(
        watch.Watch().stream(
            core.list_namespaced_config_map, "ml", resource_version=listed.metadata.resource_version, timeout_seconds=1
        )
    )
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "after")]
    assert 0.9 < time.monotonic() - started < 3


def test_pods_terminate_and_deletes_cascade(cluster: FakeCluster, api: client.ApiClient) -> None:
    cluster.add_node("node-0")
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment("ml", deployment("web"))
    first = eventually(lambda: (p := pod_of(api, "web")).status.phase == "Running" and p)

    terminating = core.delete_namespaced_pod(first.metadata.name, "ml")
    assert terminating.metadata.deletion_timestamp  # Terminating first, as on a node
    replacement = eventually(
        lambda: next((p for p in cluster.objects("pods", "ml") if p["metadata"]["name"] != first.metadata.name), None)
    )
    eventually(
        lambda: [p["metadata"]["name"] for p in cluster.objects("pods", "ml")] == [replacement["metadata"]["name"]]
    )
    assert "Stopping container server" in [e.message for e in events_of(api, first.metadata.name)]

    apps.delete_namespaced_deployment("web", "ml")
    eventually(lambda: not cluster.objects("replicasets", "ml") and not cluster.objects("pods", "ml"))


def test_api_errors_use_kubernetes_texts(cluster: FakeCluster, api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    with pytest.raises(client.ApiException) as missing:
        apps.read_namespaced_deployment("nope", "ml")
    assert missing.value.status == 404
    assert json.loads(missing.value.body)["message"] == 'deployments.apps "nope" not found'

    code, status = raw_request(cluster, "POST", "/apis/apps/v1/namespaces/ml/deployments", deployment("Bad_Name"))
    assert (code, status["reason"]) == (422, "Invalid")
    assert status["message"].startswith(
        'Deployment.apps "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": '
        "a lowercase RFC 1123 subdomain must consist of"
    )

    typo = deployment("typo", container={"imagePullPolicyy": "Always"})
    code, status = raw_request(cluster, "POST", "/apis/apps/v1/namespaces/ml/deployments?fieldValidation=Strict", typo)
    assert (code, status["message"]) == (
        400,
        'Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: '
        'unknown field "spec.template.spec.containers[0].imagePullPolicyy"',
    )

    mismatched = deployment("mismatch")
    mismatched["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    code, status = raw_request(cluster, "POST", "/apis/apps/v1/namespaces/ml/deployments", mismatched)
    assert code == 422
    assert status["message"] == (
        'Deployment.apps "mismatch" is invalid: spec.template.metadata.labels: Invalid value: '
        'map[string]string{"app":"other"}: `selector` does not match template `labels`'
    )


def test_cluster_basics_for_the_python_client(cluster: FakeCluster, api: client.ApiClient, tmp_path: Path) -> None:
    assert client.VersionApi(api).get_code().git_version == "v1.31.0"
    with FakeCluster(kube_version="1.29") as older:
        older_api = config.new_client_from_config(str(older.kubeconfig(tmp_path / "older")))
        assert client.VersionApi(older_api).get_code().minor == "29"
        older_api.close()
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "team"}})
    assert {"default", "ml", "team"} <= {n.metadata.name for n in core.list_namespace().items}

    cluster.add_node("gpu-0", gpus=8, product="NVIDIA-H100-80GB-HBM3", driver_major=550)
    node = core.read_node("gpu-0")
    assert node.status.allocatable["nvidia.com/gpu"] == "8"
    assert node.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert node.metadata.labels["nvidia.com/cuda.driver.major"] == "550"

    service = core.create_namespaced_service(
        "ml", {"metadata": {"name": "api"}, "spec": {"selector": {"app": "api"}, "ports": [{"port": 80}]}}
    )
    assert service.spec.cluster_ip
    patched = core.patch_namespaced_service("api", "ml", {"metadata": {"labels": {"tier": "web"}}})
    assert patched.spec.cluster_ip == service.spec.cluster_ip
    assert int(patched.metadata.resource_version) > int(service.metadata.resource_version)


# --- scheduling -----------------------------------------------------------------------------------------------


def test_gpu_pod_waits_for_a_gpu_node(cluster: FakeCluster, api: client.ApiClient) -> None:
    cluster.add_node("cpu-0")
    client.AppsV1Api(api).create_namespaced_deployment("ml", deployment("llm", gpus=1))

    assert failed_scheduling(api, "llm") == (
        "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. "
        "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
    )
    scheduled = {c.type: c for c in pod_of(api, "llm").status.conditions}["PodScheduled"]
    assert (scheduled.status, scheduled.reason) == ("False", "Unschedulable")

    cluster.add_node("gpu-0", gpus=1)  # Pending pods are retried
    pod = eventually(lambda: (p := pod_of(api, "llm")).status.phase == "Running" and p)
    assert pod.spec.node_name == "gpu-0"


def test_gpus_already_taken_and_untolerated_taint(cluster: FakeCluster, api: client.ApiClient) -> None:
    taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    cluster.add_node("gpu-a", gpus=1)
    cluster.add_node("gpu-b", gpus=1, taints=[taint])
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("ml", deployment("first", gpus=1))
    eventually(lambda: pod_of(api, "first").spec.node_name == "gpu-a")

    apps.create_namespaced_deployment("ml", deployment("second", gpus=1))
    assert failed_scheduling(api, "second") == (
        "0/2 nodes are available: 1 Insufficient nvidia.com/gpu, 1 node(s) had untolerated taint "
        "{nvidia.com/gpu: present}. preemption: 0/2 nodes are available: 1 No preemption victims found for "
        "incoming pod, 1 Preemption is not helpful for scheduling."
    )

    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    apps.create_namespaced_deployment("ml", deployment("tolerant", gpus=1, pod_spec={"tolerations": [toleration]}))
    assert eventually(lambda: pod_of(api, "tolerant").spec.node_name) == "gpu-b"


def test_node_affinity_and_selectors(cluster: FakeCluster, api: client.ApiClient) -> None:
    cluster.add_node("a100", gpus=1, product="NVIDIA-A100-SXM4-80GB", driver_major=535, labels={"pool": "train"})

    def affinity(*expressions: dict[str, Any]) -> dict[str, Any]:
        terms = [{"matchExpressions": list(expressions)}]
        return {
            "affinity": {
                "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}
            }
        }

    product = "nvidia.com/gpu.product"
    driver = "nvidia.com/cuda.driver.major"
    cases = {
        "in": (affinity({"key": product, "operator": "In", "values": ["NVIDIA-A100-SXM4-80GB"]}), True),
        "in-missing": (affinity({"key": product, "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]}), False),
        "notin": (affinity({"key": product, "operator": "NotIn", "values": ["NVIDIA-A100-SXM4-80GB"]}), False),
        "exists": (affinity({"key": driver, "operator": "Exists"}), True),
        "doesnotexist": (affinity({"key": driver, "operator": "DoesNotExist"}), False),
        "gt": (affinity({"key": driver, "operator": "Gt", "values": ["530"]}), True),
        "lt": (affinity({"key": driver, "operator": "Lt", "values": ["530"]}), False),
        "selector": ({"nodeSelector": {"pool": "train"}}, True),
        "selector-other": ({"nodeSelector": {"pool": "serve"}}, False),
    }
    apps = client.AppsV1Api(api)
    for name, (pod_spec, _) in cases.items():
        apps.create_namespaced_deployment("ml", deployment(name, pod_spec=pod_spec))
    for name, (_, fits) in cases.items():
        if fits:
            assert eventually(lambda name=name: pod_of(api, name).spec.node_name) == "a100", name
        else:
            assert failed_scheduling(api, name) == (
                "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. "
                "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
            ), name


# --- the kubelet ----------------------------------------------------------------------------------------------


def test_image_pull_backoff(cluster: FakeCluster, api: client.ApiClient) -> None:
    cluster.add_node("node-0")
    cluster.bad_images.add("registry.example.com/typo:1.0")
    client.AppsV1Api(api).create_namespaced_deployment("ml", deployment("web", "registry.example.com/typo:1.0"))

    def waiting_reason() -> str | None:
        statuses = pod_of(api, "web").status.container_statuses
        return statuses[0].state.waiting.reason if statuses and statuses[0].state.waiting else None

    assert eventually(lambda: waiting_reason() == "ImagePullBackOff")
    messages = [e.message for e in events_of(api, pod_of(api, "web").metadata.name) if e.reason == "Failed"]
    assert messages[0] == (
        'Failed to pull image "registry.example.com/typo:1.0": rpc error: code = NotFound desc = failed to pull and '
        'unpack image "registry.example.com/typo:1.0": not found'
    )
    assert {"Error: ErrImagePull", "Error: ImagePullBackOff"} <= set(messages)
    with pytest.raises(client.ApiException) as failure:
        client.CoreV1Api(api).read_namespaced_pod_log(pod_of(api, "web").metadata.name, "ml")
    assert failure.value.status == 400


@pytest.mark.parametrize(("exit_code", "reason"), [(1, "Error"), (137, "OOMKilled")])
def test_crash_loop_with_logs(cluster: FakeCluster, api: client.ApiClient, exit_code: int, reason: str) -> None:
    cluster.add_node("node-0")
    cluster.crash_images["registry.example.com/crash:1.0"] = (exit_code, ["loading model", "CUDA out of memory"])
    client.AppsV1Api(api).create_namespaced_deployment("ml", deployment("web", "registry.example.com/crash:1.0"))

    def crashed() -> client.V1ContainerStatus | None:
        status = pod_of(api, "web").status.container_statuses
        waiting = status and status[0].state.waiting
        return status[0] if waiting and waiting.reason == "CrashLoopBackOff" else None

    status = eventually(crashed)
    assert status.restart_count > 0
    assert (status.last_state.terminated.exit_code, status.last_state.terminated.reason) == (exit_code, reason)
    pod = pod_of(api, "web")
    assert pod.status.phase == "Running"
    backoff = [e for e in events_of(api, pod.metadata.name) if e.reason == "BackOff"]
    assert backoff[0].type == "Warning"
    assert backoff[0].message.startswith("Back-off restarting failed container server in pod web-")
    core = client.CoreV1Api(api)
    assert core.read_namespaced_pod_log(pod.metadata.name, "ml") == "loading model\nCUDA out of memory\n"
    assert core.read_namespaced_pod_log(pod.metadata.name, "ml", previous=True) == "loading model\nCUDA out of memory\n"


def test_startup_probe_kills_a_slow_container(cluster: FakeCluster, api: client.ApiClient) -> None:
    cluster.add_node("node-0")
    cluster.slow_images["registry.example.com/slow:1.0"] = 60.0
    cluster.slow_images["registry.example.com/patient:1.0"] = 0.5
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1}
    container = {"ports": [{"name": "http", "containerPort": 8080}], "startupProbe": probe}
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("ml", deployment("slow", "registry.example.com/slow:1.0", container=container))
    apps.create_namespaced_deployment(
        "ml", deployment("patient", "registry.example.com/patient:1.0", container=container)
    )

    status = eventually(
        lambda: (s := pod_of(api, "slow").status.container_statuses) and s[0].restart_count >= 1 and s[0]
    )
    assert not status.ready
    pod = pod_of(api, "slow")
    events = {e.reason: e for e in events_of(api, pod.metadata.name)}
    assert events["Unhealthy"].type == "Warning"
    assert events["Unhealthy"].message == (
        f'Startup probe failed: Get "http://{pod.status.pod_ip}:8080/healthz": '
        f"dial tcp {pod.status.pod_ip}:8080: connect: connection refused"
    )
    assert events["Killing"].message == "Container server failed startup probe, will be restarted"

    ready = eventually(lambda: (s := pod_of(api, "patient").status.container_statuses) and s[0].ready and s[0])
    assert ready.restart_count == 0


def test_progress_deadline_exceeded(
    cluster: FakeCluster, helm_config: helm.Config, chart: Path, api: client.ApiClient
) -> None:
    cluster.add_node("node-0")
    cluster.bad_images.add("registry.example.com/typo:1.0")
    values = {"image": "registry.example.com/typo:1.0", "progressDeadlineSeconds": 2}

    started = time.monotonic()
    with pytest.raises(helm.HelmReleaseError) as failure:
        helm_config.install(helm.Chart.load(str(chart)), "demo", values, wait="watcher", timeout=20)
    assert str(failure.value) == (
        "resource Deployment/ml/demo not ready. status: Failed, message: Progress deadline exceeded"
    )
    assert 2 <= time.monotonic() - started < 6  # Helm's watcher gives up as soon as the condition says so

    status = client.AppsV1Api(api).read_namespaced_deployment_status("demo", "ml").status
    progressing = next(c for c in status.conditions if c.type == "Progressing")
    assert (progressing.status, progressing.reason) == ("False", "ProgressDeadlineExceeded")
    assert progressing.message.startswith('ReplicaSet "demo-')
    assert progressing.message.endswith('" has timed out progressing.')
    assert (status.unavailable_replicas, status.available_replicas) == (1, None)  # zero counts are omitted
