"""charts/model-service, offline: lint-clean, valid for Kubernetes 1.29-1.34, and shaped by mlctl.yaml.

Every scenario is rendered through the CLI (``mlctl render --env E``, the real Helm engine) from an
environment in the service's own mlctl.yaml, then every manifest is checked against the official
schemas in strict mode for each Kubernetes release.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from conftest import REPO
from manifests import KUBE_VERSIONS, NoSchema, schema_errors
from ruamel.yaml import YAML

from mlctl.adapters import helm
from mlctl.chart.render import chart_dir, manifest_documents

DIGEST = "sha256:" + "ab" * 32
IMAGE = f"registry.example.com/acme/demo-svc:1f2e3d4c5b6a-g0123456@{DIGEST}"
H100 = "NVIDIA-H100-80GB-HBM3"
A100 = "NVIDIA-A100-SXM4-80GB"

CUDA = {"runtime": {"accelerator": "cuda"}}
#: Scenario -> environments.<name> in mlctl.yaml (plus --set flags for chart-only values).
SCENARIOS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "cpu": ({}, []),
    "gpu": ({**CUDA, "resources": {"gpu": {"count": 1}}}, []),
    "multi-gpu": ({**CUDA, "resources": {"gpu": {"count": 4, "products": [A100, H100]}, "memory": "64Gi"}}, []),
    "hpa-cpu": (
        {
            "deploy": {
                "autoscaling": {"enabled": True, "min_replicas": 2, "max_replicas": 6, "metric": "cpu", "target": 70}
            }
        },
        [],
    ),
    "hpa-queue": (
        {**CUDA, "resources": {"gpu": {"count": 1}}, "deploy": {"autoscaling": {"enabled": True, "max_replicas": 4}}},
        [],
    ),
    "pdb": ({"deploy": {"replicas": 3}}, []),
    "ingress": (
        {},
        [
            "ingress.enabled=true",
            "ingress.host=demo.example.com",
            "ingress.tlsSecretName=demo-tls",
            "ingress.className=nginx",
        ],
    ),
    "network-policy": (
        {},
        [
            "networkPolicy.enabled=true",
            r"networkPolicy.ingressFrom[0].namespaceSelector.matchLabels.kubernetes\.io/metadata\.name=ingress-nginx",
            "networkPolicy.metricsNamespace=monitoring",
            "metrics.port=9090",
        ],
    ),
    "existing-account": ({}, ["serviceAccount.create=false", "serviceAccount.name=ml-runner"]),
    "token-asked": ({}, ["serviceAccount.automountToken=true"]),
}


def with_environments(service: Path, environments: dict[str, dict[str, Any]]) -> None:
    """Replace the environments of the service's mlctl.yaml."""
    path = service / "mlctl.yaml"
    head = path.read_text().split("\nenvironments:", 1)[0]
    yaml = YAML()
    yaml.default_flow_style = False
    import io

    buffer = io.StringIO()
    yaml.dump({"environments": environments}, buffer)
    path.write_text(head + "\n" + buffer.getvalue())


def render(cli: Any, service: Path, *args: str) -> dict[str, dict[str, Any]]:
    result = cli("-C", str(service), "render", "--image", IMAGE, *args)
    assert result.exit_code == 0, result.stderr
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in manifest_documents(result.stdout)}


@pytest.fixture
def scenarios(cli: Any, service: Path) -> dict[str, dict[str, dict[str, Any]]]:
    with_environments(service, {name: env for name, (env, _) in SCENARIOS.items()})
    rendered = {}
    for name, (_, sets) in SCENARIOS.items():
        flags = [item for s in sets for item in ("--set", s)]
        rendered[name] = render(cli, service, "--env", name, *flags)
    return rendered


def test_every_manifest_is_valid_for_kubernetes_1_29_to_1_34(scenarios: dict[str, dict[str, dict[str, Any]]]) -> None:
    checked = 0
    for name, documents in scenarios.items():
        for version in KUBE_VERSIONS:
            for key, document in documents.items():
                errors = schema_errors(document, version)
                assert errors == [], f"{name} on Kubernetes {version}: {key}"
                checked += 1
    kinds = {key.split("/")[0] for documents in scenarios.values() for key in documents}
    assert kinds == {
        "ServiceAccount",
        "ConfigMap",
        "Service",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Ingress",
        "NetworkPolicy",
    }
    assert checked >= 3 * len(KUBE_VERSIONS) * len(SCENARIOS)  # at least the four every release has


def test_the_cached_validator_agrees_with_kubernetes_validate(scenarios: dict[str, dict[str, dict[str, Any]]]) -> None:
    deployment = scenarios["multi-gpu"]["Deployment/demo-svc"]
    assert kubernetes_validate.validate(deployment, "1.34", strict=True) == "1.34"
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["resources"]["limit"] = {"cpu": "1"}
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.34", strict=True)
    errors = schema_errors(broken, "1.34")
    assert len(errors) == 2, errors  # all of them, not just the first
    assert any("'limit' was unexpected" in e for e in errors)
    assert any(".spec.replicas" in e for e in errors)
    with pytest.raises(NoSchema):
        schema_errors({"apiVersion": "extensions/v1beta1", "kind": "Ingress", "metadata": {"name": "x"}}, "1.29")


def test_the_chart_is_lint_clean_in_strict_mode(scenarios: dict[str, dict[str, dict[str, Any]]]) -> None:
    values = {
        "image": {"repository": "registry.example.com/acme/demo-svc", "digest": DIGEST},
        "model": {"name": "demo"},
    }
    variants = [
        values,
        {**values, "resources": {"gpu": {"count": 2, "products": [H100]}}},
        {**values, "autoscaling": {"enabled": True}, "ingress": {"enabled": True, "host": "demo.example.com"}},
    ]
    for variant in variants:
        for version in ("1.29.0", "1.34.0"):
            report = helm.lint(chart_dir(), variant, kube_version=version)
            assert report["errors"] == [], report
            serious = [m for m in report["messages"] if m["severity"] >= 2]  # 1 is INFO ("icon is recommended")
            assert serious == [], report


def test_cpu_only_asks_for_no_gpu_and_surges(scenarios: dict[str, dict[str, dict[str, Any]]]) -> None:
    documents = scenarios["cpu"]
    assert set(documents) == {
        "ServiceAccount/demo-svc",
        "ConfigMap/demo-svc-serving",
        "Service/demo-svc",
        "Deployment/demo-svc",
    }
    pod = documents["Deployment/demo-svc"]["spec"]["template"]["spec"]
    limits = pod["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in limits
    assert "affinity" not in pod
    assert "tolerations" not in pod
    strategy = documents["Deployment/demo-svc"]["spec"]["strategy"]["rollingUpdate"]
    assert strategy == {"maxSurge": 1, "maxUnavailable": 0}


def test_one_gpu_follows_the_gpu_pod_defaults(scenarios: dict[str, dict[str, dict[str, Any]]]) -> None:
    deployment = scenarios["gpu"]["Deployment/demo-svc"]
    pod = deployment["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert server["image"] == IMAGE
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in server["resources"]["requests"]  # limits only: requests default to them
    assert server["resources"]["limits"]["memory"] == "5Gi"  # memory + shm
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Gi"}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in server["volumeMounts"]
    # The start-up probe allows the whole start-up budget (300 s) before the kubelet restarts the server.
    startup = server["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    assert startup["httpGet"]["path"] == "/v2/health/ready"
    assert server["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert deployment["spec"]["progressDeadlineSeconds"] >= 600
    assert pod["securityContext"]["runAsNonRoot"] is True
    labels = deployment["metadata"]["labels"]
    for key in ("name", "instance", "version", "component", "part-of", "managed-by"):
        assert f"app.kubernetes.io/{key}" in labels
    assert labels["app.kubernetes.io/version"] == "1f2e3d4c5b6a-g0123456"


def test_several_gpus_with_product_affinity(scenarios: dict[str, dict[str, dict[str, Any]]]) -> None:
    pod = scenarios["multi-gpu"]["Deployment/demo-svc"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [
        {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In", "values": [A100, H100]}]}
    ]


def test_a_driver_floor_becomes_node_affinity() -> None:
    from mlctl.chart.render import render_values

    values = {
        "image": {"repository": "r/demo", "digest": DIGEST},
        "model": {"name": "demo"},
        "resources": {"gpu": {"count": 1, "minDriverMajor": 570}},
    }
    rendered = render_values(values, release="demo", namespace="ml")
    deployment = next(d for d in manifest_documents(rendered.manifests["deployment.yaml"]))
    terms = deployment["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert {"key": "nvidia.com/cuda.driver.major", "operator": "Gt", "values": ["569"]} in terms[0]["matchExpressions"]


def test_autoscaling_on_cpu_or_on_a_serving_metric(scenarios: dict[str, dict[str, dict[str, Any]]]) -> None:
    cpu = scenarios["hpa-cpu"]["HorizontalPodAutoscaler/demo-svc"]["spec"]
    assert (cpu["minReplicas"], cpu["maxReplicas"]) == (2, 6)
    assert cpu["metrics"] == [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}
    ]
    assert "replicas" not in scenarios["hpa-cpu"]["Deployment/demo-svc"]["spec"]  # the HPA owns it
    queue = scenarios["hpa-queue"]["HorizontalPodAutoscaler/demo-svc"]["spec"]
    assert queue["metrics"][0]["type"] == "Pods"
    assert queue["metrics"][0]["pods"]["metric"]["name"] == "mlserve_queue_depth"
    # two or more replicas (hpa-cpu's minimum) bring a PDB; a minimum of one does not
    assert "PodDisruptionBudget/demo-svc" in scenarios["hpa-cpu"]
    assert "PodDisruptionBudget/demo-svc" not in scenarios["hpa-queue"]


def test_a_pdb_only_with_two_or_more_replicas(scenarios: dict[str, dict[str, dict[str, Any]]]) -> None:
    pdb = scenarios["pdb"]["PodDisruptionBudget/demo-svc"]["spec"]
    assert pdb["maxUnavailable"] == 1
    assert pdb["selector"]["matchLabels"] == scenarios["pdb"]["Deployment/demo-svc"]["spec"]["selector"]["matchLabels"]
    assert scenarios["pdb"]["Deployment/demo-svc"]["spec"]["replicas"] == 3
    assert not any(key.startswith("PodDisruptionBudget") for key in scenarios["cpu"])


def test_ingress(scenarios: dict[str, dict[str, dict[str, Any]]]) -> None:
    spec = scenarios["ingress"]["Ingress/demo-svc"]["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": ["demo.example.com"], "secretName": "demo-tls"}]
    backend = spec["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "demo-svc", "port": {"name": "http"}}


def test_serving_config_is_a_configmap_whose_checksum_rolls_the_pods(cli: Any, service: Path) -> None:
    before = render(cli, service)
    after = render(cli, service, "--set", "serving.env.SERVING_MAX_QUEUE=512")
    assert after["ConfigMap/demo-svc-serving"]["data"]["SERVING_MAX_QUEUE"] == "512"
    assert before["ConfigMap/demo-svc-serving"]["data"]["SERVING_MAX_QUEUE"] == "256"

    def checksum(docs: dict[str, dict[str, Any]]) -> str:
        return str(
            docs["Deployment/demo-svc"]["spec"]["template"]["metadata"]["annotations"]["checksum/serving-config"]
        )

    assert checksum(before) != checksum(after)
    assert checksum(before) == checksum(render(cli, service))
    server = before["Deployment/demo-svc"]["spec"]["template"]["spec"]["containers"][0]
    assert server["envFrom"] == [{"configMapRef": {"name": "demo-svc-serving"}}]


def test_environment_overrides_reach_the_chart(cli: Any, service: Path) -> None:
    with_environments(
        service, {"prod": {"deploy": {"replicas": 4, "namespace": "ml-prod"}, "probes": {"startup_budget_s": 900}}}
    )
    documents = render(cli, service, "--env", "prod")
    deployment = documents["Deployment/demo-svc"]
    assert deployment["metadata"]["namespace"] == "ml-prod"
    assert deployment["spec"]["replicas"] == 4
    startup = deployment["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 900
    assert deployment["spec"]["progressDeadlineSeconds"] >= 900 + 300  # pull budget + start-up budget


def test_render_json_is_the_rendered_release(cli: Any, service: Path) -> None:
    result = cli("-C", str(service), "--json", "render", "--image", IMAGE)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["release"] == "demo-svc"
    assert data["values"]["image"]["digest"] == DIGEST
    assert "deployment.yaml" in data["manifests"]


# --- hardened by default, with the waivers written in the chart ---------------------------------------


def pod_of(documents: dict[str, dict[str, Any]]) -> dict[str, Any]:
    pod: dict[str, Any] = documents["Deployment/demo-svc"]["spec"]["template"]["spec"]
    return pod


def test_no_service_account_token_in_the_pod_unless_asked(scenarios: dict[str, dict[str, dict[str, Any]]]) -> None:
    for name, documents in scenarios.items():
        asked = name == "token-asked"
        # On the pod itself: with serviceAccount.create false the pod runs as an account that may mount one.
        assert pod_of(documents)["automountServiceAccountToken"] is asked, name
        account = documents.get("ServiceAccount/demo-svc")
        if name == "existing-account":
            assert account is None
            assert pod_of(documents)["serviceAccountName"] == "ml-runner"
        else:
            assert account is not None
            assert account["automountServiceAccountToken"] is asked, name


def test_every_empty_dir_has_a_size_limit(scenarios: dict[str, dict[str, dict[str, Any]]]) -> None:
    for name, documents in scenarios.items():
        volumes = pod_of(documents)["volumes"]
        assert {v["name"]: v["emptyDir"].get("sizeLimit") for v in volumes if "emptyDir" in v} == {
            "dshm": "1Gi",
            "tmp": "1Gi",
        }, name


def test_the_network_policy_lets_in_only_the_serving_and_metrics_ports(
    scenarios: dict[str, dict[str, dict[str, Any]]],
) -> None:
    assert not any(key.startswith("NetworkPolicy/") for key in scenarios["cpu"])  # opt-in
    documents = scenarios["network-policy"]
    policy = documents["NetworkPolicy/demo-svc"]["spec"]
    assert policy["podSelector"]["matchLabels"] == documents["Deployment/demo-svc"]["spec"]["selector"]["matchLabels"]
    assert policy["policyTypes"] == ["Ingress"]  # egress stays open (weights may be fetched at start)
    assert policy["ingress"] == [
        {
            "ports": [{"port": 8080, "protocol": "TCP"}],
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
        },
        {
            "ports": [{"port": 9090, "protocol": "TCP"}],
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        },
    ]


def test_metrics_get_a_port_of_their_own_from_serving_metrics_port(cli: Any, service: Path) -> None:
    with_environments(service, {"moved": {"serving": {"metrics_port": 9100}}})
    for args, port in (((), 9090), (("--env", "moved"), 9100)):
        documents = render(cli, service, *args)
        assert documents["ConfigMap/demo-svc-serving"]["data"]["SERVING_METRICS_PORT"] == str(port)
        pod = documents["Deployment/demo-svc"]["spec"]["template"]
        assert pod["spec"]["containers"][0]["ports"] == [
            {"name": "http", "containerPort": 8080, "protocol": "TCP"},
            {"name": "metrics", "containerPort": port, "protocol": "TCP"},
        ]
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
        assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
        service_ports = documents["Service/demo-svc"]["spec"]["ports"]
        assert service_ports[1] == {"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"}
    # 0 keeps /metrics on the serving port: no port of its own, and the runtime is told so.
    shared = render(cli, service, "--set", "metrics.port=0")
    assert shared["ConfigMap/demo-svc-serving"]["data"]["SERVING_METRICS_PORT"] == "0"
    pod = shared["Deployment/demo-svc"]["spec"]["template"]
    assert [p["name"] for p in pod["spec"]["containers"][0]["ports"]] == ["http"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8080"
    assert [p["name"] for p in shared["Service/demo-svc"]["spec"]["ports"]] == ["http"]
    clash = cli("-C", str(service), "render", "--image", IMAGE, "--set", "metrics.port=8080")
    assert clash.exit_code != 0
    assert "metrics.port: 8080 is serving.port too; 0 serves /metrics on the serving port" in clash.stderr


def test_the_client_limits_of_mlctl_yaml_reach_the_pods(cli: Any, service: Path) -> None:
    with_environments(service, {"tight": {"serving": {"header_timeout_s": 2.5, "max_connections": 64}}})
    defaults = render(cli, service)["ConfigMap/demo-svc-serving"]["data"]
    tight = render(cli, service, "--env", "tight")["ConfigMap/demo-svc-serving"]["data"]
    limits = {
        "SERVING_HEADER_TIMEOUT_S": "10",
        "SERVING_BODY_TIMEOUT_S": "10",
        "SERVING_BODY_MIN_RATE": "65536",
        "SERVING_KEEPALIVE_TIMEOUT_S": "75",
        "SERVING_MAX_CONNECTIONS": "1024",
        "SERVING_MAX_BUFFERED_BYTES": "134217728",
        "SERVING_MAX_HEADER_BYTES": "16384",
        "SERVING_MAX_HEADERS": "100",
    }
    assert {k: defaults.get(k) for k in limits} == limits
    assert {k: tight.get(k) for k in limits} == {
        **limits,
        "SERVING_HEADER_TIMEOUT_S": "2.5",
        "SERVING_MAX_CONNECTIONS": "64",
    }


def test_the_scaffold_deploys_to_a_namespace_of_its_own(cli: Any, service: Path) -> None:
    documents = render(cli, service)
    assert {d["metadata"]["namespace"] for d in documents.values()} == {"demo-svc"}
    assert {d["metadata"]["namespace"] for d in render(cli, service, "--env", "staging").values()} == {
        "demo-svc-staging"
    }
    assert {d["metadata"]["namespace"] for d in render(cli, service, "--env", "prod").values()} == {"demo-svc-prod"}


CHECKOV = REPO / ".venv" / "tools" / "checkov" / "bin" / "checkov"
#: The deviations the chart waives on purpose (each with its reason in the chart), and when.
WAIVERS = {"CKV_K8S_11", "CKV2_K8S_6", "CKV_K8S_38"}


def test_checkov_finds_nothing_in_any_rendered_scenario(
    scenarios: dict[str, dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    assert CHECKOV.exists(), "checkov is missing: scripts/setup installs it"
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe")
    for name, documents in scenarios.items():
        with (tmp_path / f"{name}.yaml").open("w") as out:
            yaml.dump_all(list(documents.values()), out)
    done = subprocess.run(
        [str(CHECKOV), "-d", str(tmp_path), "--framework", "kubernetes", "--output", "json", "--compact"],
        capture_output=True,
        text=True,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
        timeout=600,
    )
    report = json.loads(done.stdout)
    results = report["results"]
    failed = results.get("failed_checks", [])
    passed = results.get("passed_checks", [])
    skipped = results.get("skipped_checks", [])
    per_file: dict[str, list[int]] = {name: [0, 0, 0] for name in scenarios}
    for index, checks in enumerate((passed, failed, skipped)):
        for check in checks:
            per_file[Path(check["file_path"]).stem][index] += 1
    print(f"checkov over {len(scenarios)} rendered scenarios: {len(failed)} failed, {len(passed)} passed, "
          f"{len(skipped)} waived")  # fmt: skip
    for name, (ok, bad, waived) in per_file.items():
        print(f"  {name}: {bad} failed, {ok} passed, {waived} waived")
    assert [f"{c['check_id']} {c['resource']} ({Path(c['file_path']).stem})" for c in failed] == []
    assert all(ok > 50 for ok, _, _ in per_file.values()), per_file  # every scenario was checked
    for check in skipped:
        assert check["check_id"] in WAIVERS, check["check_id"]
        assert len(check["check_result"].get("suppress_comment", "")) > 40, check  # a reason, not a bare skip
    waived = {(Path(c["file_path"]).stem, c["check_id"]) for c in skipped}
    assert ("token-asked", "CKV_K8S_38") in waived
    assert ("cpu", "CKV_K8S_38") not in waived
    assert ("network-policy", "CKV2_K8S_6") not in waived  # it has its policy
    assert ("cpu", "CKV2_K8S_6") in waived


# --- bad input ------------------------------------------------------------------------------------


def test_unknown_environment(cli: Any, service: Path) -> None:
    result = cli("-C", str(service), "render", "--image", IMAGE, "--env", "qa")
    assert result.exit_code == 4
    assert "unknown environment 'qa': mlctl.yaml defines dev, staging, prod" in result.stderr


def test_schema_failures_are_listed_together(cli: Any, service: Path, tmp_path: Path) -> None:
    values = tmp_path / "bad.yaml"
    values.write_text("replicaCount: -2\nresources:\n  gpu:\n    count: two\nservice:\n  port: 70000\n")
    result = cli("-C", str(service), "render", "--image", IMAGE, "--values", str(values), "--set", "probes.bogus=1")
    assert result.exit_code == 4, result.stderr
    err = result.stderr
    assert "4 problems" in err
    for path in ("replicaCount", "resources.gpu.count", "service.port", "probes"):
        assert f"  {path}:" in err, err
    assert "bogus" in err
    assert result.stdout == ""


def test_chart_rules_are_listed_together(cli: Any, service: Path) -> None:
    result = cli(
        "-C", str(service), "render", "--image", IMAGE,
        "--set", "ingress.enabled=true",
        "--set", "autoscaling.enabled=true,autoscaling.minReplicas=5,autoscaling.maxReplicas=2",
        "--set", "resources.gpu.products[0]=" + H100,
    )  # fmt: skip
    assert result.exit_code == 4
    assert "3 problems" in result.stderr
    assert "ingress.host: required when ingress.enabled" in result.stderr
    assert "autoscaling.minReplicas: 5 is above autoscaling.maxReplicas (2)" in result.stderr
    assert "resources.gpu.products: GPU products are named but resources.gpu.count is 0" in result.stderr


@pytest.mark.parametrize(
    ("count", "message"),
    [("-1", "must be >= 0, got -1"), ("two", "must be an integer, got 'two'"), ("1.5", "must be an integer, got 1.5")],
)
def test_gpu_count_must_be_a_whole_number(cli: Any, service: Path, count: str, message: str) -> None:
    path = service / "mlctl.yaml"
    path.write_text(path.read_text().replace("  gpu:\n    count: 0", f"  gpu:\n    count: {count}"))
    assert f"count: {count}" in path.read_text()
    result = cli("-C", str(service), "render", "--image", IMAGE)
    assert result.exit_code == 3
    assert message in result.stderr
    assert "mlctl.yaml:45 resources.gpu.count" in result.stderr  # file and line


def test_invalid_namespace_and_release_names(cli: Any, service: Path) -> None:
    result = cli("-C", str(service), "render", "--image", IMAGE, "--namespace", "ML_Prod")
    assert result.exit_code == 4
    assert "namespace 'ML_Prod'" in result.stderr
    long_name = "a" * 54
    result = cli("-C", str(service), "render", "--image", IMAGE, "--release", long_name)
    assert result.exit_code == 4
    assert "54 characters long; Helm allows 53" in result.stderr
    result = cli("-C", str(service), "render", "--image", IMAGE, "--release", "a" * 53)
    assert result.exit_code == 0, result.stderr


def test_an_image_without_digest_is_refused_with_require_digest(cli: Any, service: Path) -> None:
    tagged = "registry.example.com/acme/demo-svc:v1"
    # Refused before any cluster is contacted (there is none here: no kubeconfig).
    result = cli("-C", str(service), "deploy", "--dry-run", "--image", tagged, "--require-digest")
    assert result.exit_code == 4
    assert result.stderr.splitlines() == [
        f"error: the image {tagged} was not built here and has no digest, and --require-digest is set",
        "hint: pass --image REPOSITORY:TAG@sha256:... (as `mlctl build --push --json` prints it)",
    ]
    result = cli("-C", str(service), "render", "--image", tagged)
    assert result.exit_code == 0, result.stderr
    # A warning that says what is wrong: never built here (not "not pushed", which has another fix).
    assert "registry.example.com/acme/demo-svc:v1 was not built here (no mlctl build of this service" in result.stderr
    result = cli("-C", str(service), "deploy", "--dry-run", "--image", "registry.example.com/acme/demo-svc@sha256:12")
    assert result.exit_code == 4
    assert "sha256:<64 hex digits>" in result.stderr


# --- rollouts that keep the service up -----------------------------------------------------------------


@pytest.mark.parametrize("grace", [0, 5, 30, 120, 3000])
def test_stopping_pods_drain_before_the_server_stops_accepting(cli: Any, service: Path, grace: int) -> None:
    """Fault 7: with no preStop delay, a stopping pod's server refused requests that endpoints still routed to it.
    The kubelet runs the preStop hook, then sends SIGTERM, and kills the container when
    terminationGracePeriodSeconds (counted from the start of the hook) runs out: so the grace period must
    cover the drain delay and the server's own graceful shutdown, with room for the process to exit."""
    with_environments(service, {"e": {"serving": {"graceful_shutdown_s": grace}}})
    pod = pod_of(render(cli, service, "--env", "e"))
    (server,) = pod["containers"]
    command = server["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    drain = int(command[1])
    assert 2 <= drain <= 15  # long enough for endpoints to stop routing to it; short beside the grace
    assert pod["terminationGracePeriodSeconds"] == drain + grace + 5
    config = render(cli, service, "--env", "e")["ConfigMap/demo-svc-serving"]["data"]
    assert config["SERVING_GRACEFUL_SHUTDOWN_S"] == str(grace)  # the server's side of the same number


def test_the_drain_can_be_set_and_the_strategy_comes_from_deploy_strategy(cli: Any, service: Path) -> None:
    with_environments(
        service,
        {
            "gpu": {**CUDA, "resources": {"gpu": {"count": 1}}},
            "surge": {**CUDA, "resources": {"gpu": {"count": 1}}, "deploy": {"strategy": {"max_unavailable": 0}}},
            "pct": {"deploy": {"replicas": 4, "strategy": {"max_surge": "50%", "max_unavailable": "25%"}}},
        },
    )
    pod = pod_of(render(cli, service, "--set", "serving.drainSeconds=20"))
    assert pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "20"]
    assert pod["terminationGracePeriodSeconds"] == 20 + 30 + 5

    def rolling(env: str) -> dict[str, Any]:
        strategy: dict[str, Any] = render(cli, service, "--env", env)["Deployment/demo-svc"]["spec"]["strategy"]
        return dict(strategy["rollingUpdate"])

    # Offline, whether a GPU is free is unknown: a GPU service does not surge unless told to.
    assert rolling("gpu") == {"maxSurge": 0, "maxUnavailable": 1}
    assert rolling("surge") == {"maxSurge": 1, "maxUnavailable": 0}
    assert rolling("pct") == {"maxSurge": "50%", "maxUnavailable": "25%"}
    refused = cli(
        "-C",
        str(service),
        "render",
        "--image",
        IMAGE,
        "--set",
        "rollout.maxSurge=0",
        "--set",
        "rollout.maxUnavailable=0",
    )
    assert refused.exit_code == 4
    assert "rollout: maxSurge and maxUnavailable cannot both be 0" in refused.stderr


@pytest.mark.parametrize("command", ["render", "diff"])
def test_values_files_are_read_with_the_bounds_of_mlctl_yaml(
    cli: Any, service: Path, tmp_path: Path, command: str
) -> None:
    """render and diff read --values as deploy does: an alias bomb is refused before it expands (and before
    diff asks the cluster anything), naming the file and what is wrong."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(
        'a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n'
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    )
    result = cli("-C", str(service), command, "--image", IMAGE, "--values", str(bomb))
    assert result.exit_code == 4, result.stderr
    assert result.stderr.startswith(f"error: --values {bomb}"), result.stderr
    assert "keys and values" in result.stderr
    assert result.stdout == ""
