"""CI pipeline files for a service: test, build and push, deploy to staging, promote to prod.

The pipelines call mlctl itself for every step (with ``--json`` results kept as artefacts), so what
runs in CI is what a developer runs, and the pipeline file stays short. Registry credentials and the
kubeconfig come from the CI system's secrets, never from the file.
"""

from __future__ import annotations

import hashlib

from mlctl import __version__
from mlctl.atomic import replace_file
from mlctl.config import CONFIG_FILE, LoadedConfig, ServiceConfig
from mlctl.errors import ConflictError, InputError
from mlctl.models import CiResult
from mlctl.reporting import NullReporter, Reporter
from mlctl.resources import data_dir

#: Provider -> the file it reads, relative to the service (the repository root).
PROVIDERS = {"github": ".github/workflows/mlctl.yml", "gitlab": ".gitlab-ci.yml"}
#: Where pipelines install mlctl from (the CI variable MLCTL_INSTALL overrides it). The serving runtime
#: comes from mlctl itself (``mlctl runtime wheel``).
SOURCE = "https://github.com/mlctl/mlctl"
#: Where the test job's CPU build of torch comes from (the CI variable TORCH_INDEX_URL overrides it).
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


def ci_path(provider: str) -> str:
    """The pipeline file of ``provider``, relative to the service."""
    if provider not in PROVIDERS:
        raise InputError(f"--provider {provider}: mlctl writes pipelines for {', '.join(PROVIDERS)}")
    return PROVIDERS[provider]


#: Actions the GitHub workflow uses, pinned by commit (a tag can be moved to other code; a commit cannot),
#: with the release each commit is, for people reading the file and for update bots.
GITHUB_ACTIONS = {
    "checkout": "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1",
    "setup_python": "actions/setup-python@5fda3b95a4ea91299a34e894583c3862153e4b97 # v7.0.0",
    "upload_artifact": "actions/upload-artifact@bbbca2ddaa5d8feaa63e36b76fdaad77386f024f # v7.0.0",
}


def check_branch(branch: str) -> None:
    """Refuse a ``--branch`` git would not take as a branch name (it is written into the pipeline)."""
    from mlctl.names import branch_name_problem
    from mlctl.scaffold.templates import shown

    problem = branch_name_problem(branch)
    if problem:
        raise InputError(f"--branch {shown(branch)}: {problem}", hint="give the branch as git names it, e.g. main")


def render_ci(config: ServiceConfig, provider: str, *, branch: str = "main") -> str:
    """The pipeline file's text for ``provider`` (github or gitlab).

    Every value from outside the template (the branch, the registry, versions) is written through a
    filter for where it lands: a YAML scalar, a shell word, a GitHub or GitLab expression string.

    Raises:
        InputError: an unknown provider, or a branch git would refuse (or GitLab could not quote).
    """
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    from mlctl.scaffold.escape import FILTERS, yaml_scalar

    ci_path(provider)
    check_branch(branch)
    if provider == "github" and "${{" in branch:
        raise InputError(
            f"--branch {branch}: holds '${{{{', which GitHub reads as the start of an expression wherever it is",
            hint="rename the branch, or edit the workflow by hand",
        )
    # << >> and <% %>: the pipelines' own ${{ }} and $VAR syntax stays as it is.
    env = SandboxedEnvironment(
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        variable_start_string="<<",
        variable_end_string=">>",
        block_start_string="<%",
        block_end_string="%>",
        comment_start_string="<#",
        comment_end_string="#>",
    )
    env.filters.update(FILTERS)
    # GitLab expands $VAR in variables' values: $$ is a literal $.
    env.filters["gitlab_var"] = lambda value: yaml_scalar(str(value).replace("$", "$$"))
    source = (data_dir("templates") / "ci" / f"{provider}.yml.j2").read_text(encoding="utf-8")
    text = env.from_string(source).render(
        name=config.name,
        branch=_comment(branch),
        branch_pattern=_github_pattern(branch),
        branch_ref=_github_string("refs/heads/" + branch),
        branch_literal=_gitlab_string(branch) if provider == "gitlab" else "",
        python=config.runtime.python,
        torch=config.runtime.torch,
        registry_host=config.image.registry.split("/")[0],
        mlctl_version=__version__,
        mlctl_install=f"mlctl @ git+{SOURCE}@v{__version__}",
        torch_index=CPU_TORCH_INDEX,
        gitlab_build_tag="docker",
        actions=GITHUB_ACTIONS,
    )
    return text + f"{CHECKSUM}{_checksum(text)}\n"


def _comment(text: str) -> str:
    """Text for a YAML comment: anything that could end the line is escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _github_pattern(branch: str) -> str:
    """A branch as a GitHub branch filter matching only itself: its pattern characters escaped."""
    return "".join("\\" + c if c in "*?+[]!\\" else c for c in branch)


def _github_string(text: str) -> str:
    """A GitHub expression string literal: single quotes, a quote inside doubled."""
    return "'" + text.replace("'", "''") + "'"


def _gitlab_string(text: str) -> str:
    """A GitLab rules expression string literal.

    GitLab's strings have no escapes: the quote used must not occur in the text.
    """
    if '"' not in text:
        return f'"{text}"'
    if "'" not in text:
        return f"'{text}'"
    raise InputError(
        f"--branch {text}: holds both ' and \", which a GitLab rules expression cannot quote",
        hint="rename the branch, or edit the rule by hand",
    )


#: The last line of a pipeline mlctl wrote: a hand edit changes the content, not the checksum.
CHECKSUM = "# mlctl checksum (regenerated freely while it matches): "


def _checksum(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def edited(current: str) -> bool:
    """Whether a pipeline file was changed since mlctl wrote it (or was not written by mlctl)."""
    body, _, last = current.rstrip("\n").rpartition("\n")
    return not (last.startswith(CHECKSUM) and last[len(CHECKSUM) :] == _checksum(body + "\n"))


def ci_warnings(config: ServiceConfig) -> list[str]:
    """What the pipeline will need that mlctl.yaml does not say yet."""
    warnings = []
    if not config.image.registry:
        warnings.append(f"image.registry is empty in {CONFIG_FILE}: the build job cannot push until it is set")
    missing = [name for name in ("staging", "prod") if name not in config.environments]
    if missing:
        warnings.append(
            f"{CONFIG_FILE} has no environments.{' or environments.'.join(missing)}: the deploy jobs use them "
            "(an environment may be empty: `staging: {}`)"
        )
    return warnings


def generate_ci(
    loaded: LoadedConfig,
    *,
    provider: str,
    branch: str = "main",
    force: bool = False,
    dry_run: bool = False,
    reporter: Reporter | None = None,
) -> CiResult:
    """Write the pipeline file for ``provider`` into the service whose config is ``loaded``.

    Raises:
        InputError: an unknown provider. ConflictError: the file exists with other content (``force``
        replaces it).
    """
    reporter = reporter or NullReporter()
    relative = ci_path(provider)
    text = render_ci(loaded.config, provider, branch=branch)
    warnings = ci_warnings(loaded.config)
    for warning in warnings:
        reporter.warn(warning)
    path = loaded.directory / relative
    current = path.read_text(encoding="utf-8") if path.is_file() else None
    if current == text:
        return CiResult(provider, relative, "unchanged", tuple(warnings), text)
    if current is not None and edited(current) and not force:
        raise ConflictError(
            f"{relative} was edited since mlctl wrote it (or mlctl did not write it)",
            hint="--dry-run prints the new file; --force replaces it (copy your changes over first)",
        )
    status = "replaced" if current is not None else "created"
    if dry_run:
        return CiResult(provider, relative, f"would be {status}", tuple(warnings), text)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(path, text.encode("utf-8"))
    reporter.step(f"{status} {relative}")
    return CiResult(provider, relative, status, tuple(warnings), text)
