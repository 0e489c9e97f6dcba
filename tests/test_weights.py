"""Weights as an input: where ``model.source`` says they come from, how pinned ones are downloaded and
cached, what a failing ``model.prepare`` leaves, and which weights a deploy says it runs.

Downloads go to a real HTTP server on 127.0.0.1 that counts its requests and can be told to fail; the
cache is mlctl's own (``MLCTL_CACHE_DIR``, a directory of each test's)."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port

from mlctl import weights
from mlctl.errors import BuildError, ClusterError, ExitCode, InputError
from mlctl.reporting import RecordingReporter

WEIGHTS = bytes(range(256)) * 4096  # 1 MiB: a few progress steps
DIGEST = hashlib.sha256(WEIGHTS).hexdigest()


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLCTL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "weights" / "sha256"


@dataclass
class Server:
    """What the weights server answers: ``failures`` requests get ``status`` first, ``truncate`` cuts bodies."""

    url: str
    body: bytes = WEIGHTS
    failures: int = 0
    status: int = 503
    truncate: bool = False
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            if state.failures:
                state.failures -= 1
                self.send_error(state.status)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body[: len(state.body) // 2] if state.truncate else state.body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/models/fraud/v3.pt?token=not-in-messages"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def fetch(uri: str, digest: str = DIGEST, **kwargs: Any) -> Path:
    kwargs.setdefault("reporter", RecordingReporter())
    return weights.fetch(uri, digest, backoff_s=0, **kwargs)


# --- downloads ------------------------------------------------------------------------------------------


def test_a_pinned_download_lands_in_the_cache_once(server: Server, cache: Path) -> None:
    reporter = RecordingReporter()
    path = fetch(server.url, reporter=reporter)
    assert path == cache / DIGEST
    assert path.read_bytes() == WEIGHTS
    assert server.requests == ["/models/fraud/v3.pt?token=not-in-messages"]
    progress = [message for kind, message in reporter.events if kind == "status"]
    assert progress[0] == "downloading the weights from 127.0.0.1: 0 % of 1.0 MB"
    assert progress[-1] == "downloading the weights from 127.0.0.1: 100 % of 1.0 MB"
    assert any(m.startswith("downloaded the weights from 127.0.0.1: 1.0 MB in ") for k, m in reporter.events)
    assert sorted(p.name for p in cache.iterdir()) == [f"{DIGEST}", f"{DIGEST}.lock"]  # no partial file left

    again = RecordingReporter()
    assert fetch(server.url, reporter=again) == path
    assert len(server.requests) == 1  # from the cache: the network is not asked again
    assert again.events == [("step", f"weights sha256:{DIGEST[:12]}: in the cache, not downloaded again")]


def test_a_download_with_another_digest_is_discarded(server: Server, cache: Path) -> None:
    other = hashlib.sha256(b"the weights someone meant").hexdigest()
    with pytest.raises(BuildError) as refused:
        fetch(server.url, other)
    assert refused.value.exit_code == ExitCode.BUILD
    assert refused.value.message == (
        f"the weights from 127.0.0.1 are sha256:{DIGEST}, not the sha256:{other} model.sha256 pins: "
        "the download was discarded"
    )
    assert [p.name for p in cache.iterdir()] == [f"{other}.lock"]  # nothing cached, nothing half-written


def test_an_unreachable_host_is_tried_a_few_times_then_named(server: Server) -> None:
    server.failures = 10
    with pytest.raises(ClusterError) as failed:
        fetch(server.url)
    assert failed.value.exit_code == ExitCode.CLUSTER
    assert failed.value.message == (
        "cannot download the weights from 127.0.0.1: HTTP 503 Service Unavailable (3 attempts)"
    )
    assert len(server.requests) == weights.ATTEMPTS
    nothing = f"http://127.0.0.1:{free_port()}/m.pt"  # nothing listens there
    with pytest.raises(ClusterError) as refused:
        fetch(nothing)
    assert refused.value.message == "cannot download the weights from 127.0.0.1: Connection refused (3 attempts)"


def test_a_passing_failure_is_retried(server: Server) -> None:
    server.failures = 1
    assert fetch(server.url).read_bytes() == WEIGHTS
    assert len(server.requests) == 2
    server.requests.clear()


def test_a_cut_connection_is_retried(server: Server, cache: Path) -> None:
    server.truncate = True
    with pytest.raises(ClusterError) as failed:
        fetch(server.url)
    assert "the connection ended after 524288 of 1048576 bytes (3 attempts)" in failed.value.message
    assert [p.name for p in cache.iterdir()] == [f"{DIGEST}.lock"]


def test_what_the_host_refuses_is_not_asked_again(server: Server) -> None:
    server.failures, server.status = 1, 404
    with pytest.raises(ClusterError) as refused:
        fetch(server.url)
    assert refused.value.message == "cannot download the weights from 127.0.0.1: HTTP 404 Not Found"
    assert len(server.requests) == 1


def test_file_uris(tmp_path: Path) -> None:
    source = tmp_path / "exported" / "model.pt"
    source.parent.mkdir()
    source.write_bytes(WEIGHTS)
    assert fetch(source.as_uri()).read_bytes() == WEIGHTS
    with pytest.raises(InputError) as missing:
        fetch((tmp_path / "nowhere.pt").as_uri(), hashlib.sha256(b"x").hexdigest())
    assert missing.value.message == f"model.uri {(tmp_path / 'nowhere.pt').as_uri()}: No such file or directory"


def test_the_digest_of_a_directory_of_weights() -> None:
    files = [("b/shard-2.bin", b"2"), ("a.json", b"{}")]
    listing = "".join(f"{p}\0{hashlib.sha256(c).hexdigest()}\n" for p, c in sorted(files))
    assert weights.files_digest(files, single=False) == "sha256:" + hashlib.sha256(listing.encode()).hexdigest()
    assert weights.files_digest([("model.pt", b"w")], single=True) == "sha256:" + hashlib.sha256(b"w").hexdigest()
    with pytest.raises(BuildError) as pinned:
        weights.check_pin("sha256:" + "1" * 64, "2" * 64, "weights/model.pt")
    assert pinned.value.message == (
        f"the weights weights/model.pt are sha256:{'1' * 64}, but model.sha256 in mlctl.yaml pins sha256:{'2' * 64}"
    )


# --- mlctl.yaml -------------------------------------------------------------------------------------------


def model_section(service: Path, section: str) -> None:
    config = service / "mlctl.yaml"
    text = config.read_text()
    start = text.index("model:\n")
    end = text.index("\nserving:")
    config.write_text(text[:start] + "model:\n" + section + text[end:])


@pytest.mark.parametrize(
    ("section", "problems"),
    [
        (
            "  source: uri\n  uri: https://models.example.com/v3.pt\n",
            [
                "model.sha256: required when model.source is 'uri': mlctl downloads the weights when it builds and "
                "checks them (for weights the server loads at start, use source: external)"
            ],
        ),
        (
            "  source: uri\n  uri: https://models.example.com/v3.pt\n  sha256: abc\n",
            ["model.sha256: 'abc' is not a SHA-256 digest (64 hex digits, e.g. from `sha256sum FILE`)"],
        ),
        (
            f"  source: uri\n  uri: s3://bucket/v3.pt\n  sha256: {DIGEST}\n",
            ["model.uri: 's3://bucket/v3.pt': mlctl downloads weights from http://, https://, file:// URIs"],
        ),
        (
            f"  source: uri\n  uri: https://me:pw@models.example.com/v3.pt\n  sha256: {DIGEST}\n",
            [
                "model.uri: holds credentials, which would be committed with mlctl.yaml: put the weights where the "
                "build can read them without (or use a file:// path the CI job downloads to)"
            ],
        ),
        (
            "  source: prepare\n",
            ["model.prepare: required when model.source is 'prepare' (the command that makes the weights)"],
        ),
        (
            "  source: external\n",
            ["model.uri: required when model.source is 'external' (what the server loads at start)"],
        ),
        # model.prepare runs without a shell, split into words as a shell would: an unclosed quote cannot
        # be split, and blanks hold no command (both reached shlex or docker unchecked once).
        (
            "  source: prepare\n  prepare: python -m svc.train --name 'x\n",
            ['model.prepare: "python -m svc.train --name \'x" cannot be split into words (no closing quotation)'],
        ),
        (
            "  source: baked\n  prepare: '   '\n",
            ["model.prepare: holds no command (the command that makes the weights, e.g. python -m svc.train)"],
        ),
        (
            "  source: file\n  prepare: python -m x\n  path: ../outside.pt\n",
            [
                "model.prepare: only used with source 'prepare' or 'baked', not 'file'",
                "model.path: '../outside.pt' must be a relative path inside the service",
            ],
        ),
    ],
)
def test_model_sources_say_what_they_miss(cli: Any, service: Path, section: str, problems: list[str]) -> None:
    model_section(service, section)
    result = cli("-C", str(service), "config", "validate")
    assert result.exit_code == ExitCode.CONFIG
    assert [line.split(" ", 2)[2] for line in result.stderr.splitlines() if line.startswith("error: ")] == problems


def test_baked_is_prepare_with_a_command_else_file(service: Path) -> None:
    from mlctl.config import load_service_config

    model_section(service, "  source: baked\n  prepare: python -m demo_svc.weights weights/model.pt\n")
    assert load_service_config(service).config.model.kind == "prepare"
    model_section(service, "  source: baked\n")
    assert load_service_config(service).config.model.kind == "file"
    model_section(service, f"  source: uri\n  uri: https://x.example/m.pt\n  sha256: sha256:{DIGEST.upper()}\n")
    assert load_service_config(service).config.model.sha256 == DIGEST  # as sha256sum prints it, and docker


# --- mlctl run ----------------------------------------------------------------------------------------------


def test_run_serves_pinned_weights_from_the_cache(service: Path, server: Server, cache: Path) -> None:
    from mlctl.config import load_service_config
    from mlctl.workflow.run import plan_run

    model_section(service, f"  source: uri\n  uri: {server.url}\n  sha256: {DIGEST}\n")
    plan = plan_run(load_service_config(service), port=free_port())
    assert plan.env["SERVING_MODEL_PATH"] == str(cache / DIGEST)
    assert plan.prepare is None
    assert not (service / "weights").exists()


@pytest.mark.parametrize(
    ("prepare", "code", "first", "hint"),
    [
        (
            "python -c \"open('weights/model.pt', 'w').write('half'); print('training...'); raise SystemExit(3)\"",
            ExitCode.BUILD,
            "error: model.prepare `{prepare}` failed with status 3",
            "hint: its last lines:",
        ),
        (
            "python -c \"print('forgot to save')\"",
            ExitCode.CONFIG,
            "error: model.prepare `{prepare}` succeeded but nothing is at model.path (weights/model.pt)",
            "hint: make model.prepare write the weights to model.path, or point model.path at what it writes",
        ),
        (
            "no-such-trainer --epochs 3",
            ExitCode.CONFIG,
            "error: model.prepare `{prepare}` could not start: No such file or directory",
            "hint: fix model.prepare in mlctl.yaml (a command run from the service directory)",
        ),
    ],
)
def test_a_prepare_that_fails_leaves_nothing(
    cli: Any, service: Path, monkeypatch: pytest.MonkeyPatch, prepare: str, code: int, first: str, hint: str
) -> None:
    model_section(service, f"  source: prepare\n  prepare: {json.dumps(prepare)}\n")
    (service / "weights").mkdir()
    monkeypatch.chdir(service)
    result = cli("run", "--port", str(free_port()), "--no-reload")
    assert result.exit_code == code, result.stderr
    lines = result.stderr.splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert lines[errors[0]] == first.format(prepare=prepare)
    assert lines[errors[0] + 1] == hint
    if code == ExitCode.BUILD:
        assert "    training..." in lines
    assert not (service / "weights" / "model.pt").exists()  # what it half-wrote is gone


# --- deploy -------------------------------------------------------------------------------------------------


def test_a_deploy_says_which_weights_run(
    cli: Any, service: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kube.emulator import FakeCluster

    from mlctl.images.record import record_build
    from mlctl.models import BuildResult, ImageRef

    digest = "sha256:" + "3" * 64
    ref = ImageRef("demo-svc", f"aaaa-g1111111-w{DIGEST[:12]}", digest)  # what `mlctl build` recorded
    labels = {"mlctl.weights": f"sha256:{DIGEST}"}
    record_build(service, BuildResult("demo-svc", ref, (ref.tag,), False, (), (), labels, "", f"sha256:{DIGEST}"))
    with FakeCluster(kube_version="1.31") as cluster:
        cluster.add_namespace("demo-svc-staging")
        cluster.add_node("cpu-0")
        monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig(tmp_path / "kubeconfig")))
        shown = cli("-C", str(service), "deploy", "--env", "staging")
        assert shown.exit_code == 0, shown.stderr
        assert f"\nweights sha256:{DIGEST}\n" in shown.stdout
        again = cli("-C", str(service), "--json", "deploy", "--env", "staging", "--image", ref.reference)
        assert json.loads(again.stdout)["weights"] == f"sha256:{DIGEST}"  # --image of the recorded build
        elsewhere = cli(
            "-C", str(service), "--json", "deploy", "--env", "staging", "--image",
            f"registry.example.com/acme/demo-svc:bbbb-g2222222-w{'4' * 12}@sha256:{'5' * 64}",
        )  # fmt: skip
        assert json.loads(elsewhere.stdout)["weights"] == f"sha256:{'4' * 12}"  # an unknown build: from its tag
