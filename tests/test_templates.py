"""``mlctl templates list`` and ``show``."""

from __future__ import annotations

import json

from mlctl.errors import ExitCode


def test_list(cli) -> None:
    result = cli("templates", "list")
    assert result.exit_code == 0
    assert result.stdout == (
        "NAME              VERSION  DESCRIPTION\n"
        "pytorch-generate  1.3.0    Streaming text generation (server-sent events) with a tiny character-level "
        "PyTorch model.\n"
        "pytorch-predict   1.4.0    A PyTorch model served over the Open Inference Protocol (V2 REST), "
        "with Prometheus metrics.\n"
    )


def test_show(cli) -> None:
    result = cli("templates", "show", "pytorch-predict")
    assert result.exit_code == 0
    assert result.stdout == (
        "pytorch-predict 1.4.0 (built-in)\n"
        "A PyTorch model served over the Open Inference Protocol (V2 REST), with Prometheus metrics.\n"
        "\n"
        "Questions (answer with --set NAME=VALUE):\n"
        "NAME            TYPE                    DEFAULT                    HELP\n"
        "description     str                     A PyTorch model service    One line saying what the service does\n"
        "accelerator     choice: cuda|cpu        cuda with a GPU, else cpu  Build and deploy for NVIDIA GPUs (cuda) "
        "or for CPUs only (cpu)\n"
        "gpu_count       int                     1                          GPUs per replica\n"
        "python_version  choice: 3.10|3.11|3.12  3.11                       Python version of the service image\n"
        "torch_version   str                     2.13.0                     PyTorch version of the service image\n"
        "port            int                     8080                       Port the HTTP server listens on inside "
        "the container\n"
        "max_batch_size  int                     16                         Largest batch the server runs through "
        "the model at once\n"
        "registry        str                     ''                         Image registry to push to (empty keeps "
        "images local)\n"
        "namespace       str                     ''                         Kubernetes namespace prefix: each "
        "environment deploys to PREFIX-ENV (empty: the service name)\n"
    )


def test_show_json(cli) -> None:
    data = json.loads(cli("templates", "show", "pytorch-predict", "--json").stdout)
    assert (data["name"], data["version"], data["source"]) == ("pytorch-predict", "1.4.0", "built-in")
    gpu = next(q for q in data["questions"] if q["name"] == "gpu_count")
    assert gpu == {
        "name": "gpu_count",
        "type": "int",
        "help": "GPUs per replica",
        "default": 1,
        "choices": [],
        "machine": None,
    }
    accelerator = next(q for q in data["questions"] if q["name"] == "accelerator")
    assert (accelerator["machine"], accelerator["default"]) == ("accelerator", "cpu")


def test_show_unknown(cli) -> None:
    result = cli("templates", "show", "nope")
    assert result.exit_code == ExitCode.INPUT
    assert result.stderr == (
        "error: unknown template 'nope'; available: pytorch-generate, pytorch-predict\n"
        "hint: see `mlctl templates list`\n"
    )


def test_a_broken_manifest_is_reported_as_the_template_authors_bug(cli, tmp_path, monkeypatch) -> None:
    bad = tmp_path / "tpl" / "bad"
    (bad / "files").mkdir(parents=True)
    (bad / "template.yaml").write_text("name: bad\nversion: one\ndescription: x\n")
    monkeypatch.setenv("MLCTL_TEMPLATE_PATH", str(tmp_path / "tpl"))
    result = cli("templates", "list")
    assert result.exit_code == ExitCode.FAILURE
    assert result.stderr.startswith(f"error: template manifest {bad / 'template.yaml'} is invalid: ")
    assert "version: String should match pattern" in result.stderr


def test_a_hostile_manifest_is_refused_quickly(cli, tmp_path, monkeypatch) -> None:
    bad = tmp_path / "tpl" / "bomb"
    (bad / "files").mkdir(parents=True)
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
    )
    (bad / "template.yaml").write_text("name: bomb\nversion: 1.0.0\ndescription: x\n" + bomb)
    monkeypatch.setenv("MLCTL_TEMPLATE_PATH", str(tmp_path / "tpl"))
    result = cli("templates", "list")
    assert result.exit_code == ExitCode.FAILURE
    assert result.stderr.splitlines()[0] == (
        f"error: template manifest {bad / 'template.yaml'} cannot be read: {bad / 'template.yaml'}:7: more than "
        "2500 keys and values (aliases counted each time they are used): too large for an mlctl config"
    )
