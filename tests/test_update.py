"""``mlctl update``: a service made from version 1 of a template is moved to version 2, keeping the
team's edits. The template is a temporary copy of pytorch-predict on MLCTL_TEMPLATE_PATH, bumped in
place, as a template author would bump it; git and ``git merge-file`` are real."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from mlctl.config import load_service_config


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pytorch-predict 1.0.0, in a directory on MLCTL_TEMPLATE_PATH."""
    root = tmp_path / "templates"
    shutil.copytree(REPO / "templates" / "pytorch-predict", root / "pytorch-predict")
    manifest = root / "pytorch-predict" / "template.yaml"
    manifest.write_text(manifest.read_text().replace("version: 1.4.0", "version: 1.0.0"))
    monkeypatch.setenv("MLCTL_TEMPLATE_PATH", str(root))
    return root / "pytorch-predict"


@pytest.fixture
def svc(cli: Any, isolated: Path, template: Path) -> Path:
    result = cli("new", "acme-svc", "--set", "accelerator=cpu", "--ci", "none")
    assert result.exit_code == 0, result.stderr
    return isolated / "acme-svc"


def bump(template: Path, edits: dict[str, tuple[str, str]], *, new_files: dict[str, str] | None = None) -> None:
    """Version 2.0.0 of the template: replace text in files/ (path -> (old, new)), add files and a question."""
    manifest = template / "template.yaml"
    text = manifest.read_text().replace("version: 1.0.0", "version: 2.0.0")
    text += (
        "  - name: log_format\n    type: choice\n    choices: [text, json]\n    default: json\n    help: Log format\n"
    )
    manifest.write_text(text)
    for path, (old, new) in edits.items():
        target = template / "files" / path
        content = target.read_text()
        assert old in content, (path, old)
        target.write_text(content.replace(old, new, 1))
    for path, content in (new_files or {}).items():
        (template / "files" / path).write_text(content)


def update(cli: Any, svc: Path, *args: str) -> Any:
    return cli("-C", str(svc), *args)


def test_an_update_keeps_the_teams_edits_and_brings_the_templates(cli: Any, svc: Path, template: Path) -> None:
    readme = svc / "README.md"
    readme.write_text(readme.read_text() + "\n## On call\n\nPage the fraud team.\n")
    model = svc / "acme_svc" / "model.py"
    original_model = model.read_text()
    git(svc, "commit", "-qam", "our notes")

    bump(
        template,
        {
            "README.md.j2": ("## Run it", "## Run it locally"),
            "tests/test_model.py.j2": ("import ", "# checked by the template's 2.0.0 tests\nimport "),
        },
        new_files={
            "CHANGELOG.md.j2": "# {{ name }} changelog\n\nMade from {{ template_name }} {{ template_version }}.\n"
        },
    )
    check = update(cli, svc, "update", "--check")
    assert check.exit_code == 1
    assert "pytorch-predict: 1.0.0 -> 2.0.0 is available" in check.stdout

    result = update(cli, svc, "--json", "update")
    assert result.exit_code == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert (data["from_version"], data["to_version"], data["conflicts"]) == ("1.0.0", "2.0.0", 0)
    actions = {f["path"]: f["action"] for f in data["files"]}
    assert actions == {
        "CHANGELOG.md": "added",
        "README.md": "merged",  # ours and the template's, in different places
        "mlctl.yaml": "updated",  # the new version and the new question's answer
        "tests/test_model.py": "updated",
    }
    text = readme.read_text()
    assert "## Run it locally" in text  # the template's change
    assert "## On call\n\nPage the fraud team.\n" in text  # ours
    assert "from the `pytorch-predict` template, version 2.0.0" in text
    assert (svc / "CHANGELOG.md").read_text() == "# acme-svc changelog\n\nMade from pytorch-predict 2.0.0.\n"
    assert "# checked by the template's 2.0.0 tests" in (svc / "tests" / "test_model.py").read_text()
    assert model.read_text() == original_model
    recorded = load_service_config(svc).config.template
    assert recorded is not None
    assert (recorded.version, recorded.answers["log_format"], recorded.answers["accelerator"]) == (
        "2.0.0",
        "json",
        "cpu",
    )
    assert update(cli, svc, "update", "--check").exit_code == 0
    assert "pytorch-predict: 2.0.0 is the newest version" in update(cli, svc, "update").stdout


def test_a_version_from_before_the_escaping_filters_still_re_renders(cli: Any, svc: Path, template: Path) -> None:
    # Template versions older than mlctl.scaffold.escape wrote answers without a filter; new renders refuse
    # that, but the base of an update is rendered as it was made.
    kept = Path.home() / ".cache" / "mlctl" / "templates" / "pytorch-predict" / "1.0.0" / "files" / "README.md.j2"
    kept.write_text(kept.read_text().replace("{{ description | md }}", "{{ description }}"))
    bump(template, {"README.md.j2": ("## Run it", "## Run it locally")})
    result = update(cli, svc, "update")
    assert result.exit_code == 0, result.stderr
    assert "## Run it locally" in (svc / "README.md").read_text()


def test_the_same_lines_changed_on_both_sides_are_marked(cli: Any, svc: Path, template: Path) -> None:
    readme = svc / "README.md"
    readme.write_text(readme.read_text().replace("## Run it", "## Run it on your laptop", 1))
    git(svc, "commit", "-qam", "ours")
    bump(template, {"README.md.j2": ("## Run it", "## Run it locally")})
    result = update(cli, svc, "update")
    assert result.exit_code == 5, result.stderr
    assert "conflict  README.md" in result.stdout
    assert "1 file(s) have conflict markers" in result.stdout
    text = readme.read_text()
    assert (
        "<<<<<<< yours\n## Run it on your laptop\n=======\n## Run it locally\n>>>>>>> pytorch-predict 2.0.0\n" in text
    )


def test_dry_run_shows_and_writes_nothing(cli: Any, svc: Path, template: Path) -> None:
    bump(template, {"README.md.j2": ("## Run it", "## Run it locally")})
    before = git(svc, "rev-parse", "HEAD")
    result = update(cli, svc, "update", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "-## Run it\n+## Run it locally\n" in result.stdout
    assert "updated   README.md" in result.stdout
    assert "would move to 2.0.0" in result.stdout
    assert git(svc, "status", "--porcelain") == ""
    assert git(svc, "rev-parse", "HEAD") == before


def test_a_dirty_tree_is_refused(cli: Any, svc: Path, template: Path) -> None:
    bump(template, {"README.md.j2": ("## Run it", "## Run it locally")})
    (svc / "notes.txt").write_text("wip\n")
    result = update(cli, svc, "update")
    assert result.exit_code == 5
    assert "the service has uncommitted changes; commit or stash them first" in result.stderr
    assert "## Run it locally" not in (svc / "README.md").read_text()


def test_the_old_version_must_be_found(cli: Any, svc: Path, template: Path, isolated: Path) -> None:
    bump(template, {"README.md.j2": ("## Run it", "## Run it locally")})
    shutil.rmtree(Path.home() / ".cache" / "mlctl" / "templates")  # as on a machine that never used 1.0.0
    result = update(cli, svc, "update")
    assert result.exit_code == 4
    assert "template pytorch-predict 1.0.0 (the version this service was made from) cannot be found" in result.stderr
    assert "MLCTL_TEMPLATE_PATH" in result.stderr
    assert git(svc, "status", "--porcelain") == ""


def test_a_service_without_a_template(cli: Any, svc: Path) -> None:
    config = svc / "mlctl.yaml"
    text = config.read_text()
    start = text.index("# Where this service came from")
    end = text.index("runtime:")
    config.write_text(text[:start] + text[end:])
    result = update(cli, svc, "update")
    assert result.exit_code == 4
    assert "mlctl.yaml records no template" in result.stderr
