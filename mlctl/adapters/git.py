"""The only module that imports gitpython."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlctl.errors import EnvironmentProblem

FALLBACK_NAME = "mlctl"
FALLBACK_EMAIL = "mlctl@localhost"


@dataclass(frozen=True)
class Commit:
    sha: str
    #: True when git had no user.name/user.email and the commit was made as "mlctl".
    fallback_identity: bool


def _git() -> Any:
    try:
        import git
    except ImportError as exc:  # gitpython raises ImportError when the git binary is missing
        raise EnvironmentProblem(
            f"git is not usable: {exc}".splitlines()[0],
            hint="install git (apt-get install git) or pass --no-git",
        ) from None
    return git


def git_version() -> str:
    """The version of the git binary, e.g. ``2.39.5``."""
    git = _git()
    return ".".join(str(p) for p in git.Git().version_info)


def init_and_commit(path: Path, message: str) -> Commit:
    """``git init`` (branch ``main``), stage everything, and make the first commit."""
    git = _git()
    try:
        repo = git.Repo.init(path, initial_branch="main")
        repo.git.add(A=True)
        reader = repo.config_reader()
        name = os.environ.get("GIT_AUTHOR_NAME") or reader.get_value("user", "name", default="")
        email = os.environ.get("GIT_AUTHOR_EMAIL") or reader.get_value("user", "email", default="")
        fallback = not (name and email)
        env = {}
        if fallback:
            env = {
                "GIT_AUTHOR_NAME": str(name or FALLBACK_NAME),
                "GIT_AUTHOR_EMAIL": str(email or FALLBACK_EMAIL),
                "GIT_COMMITTER_NAME": str(name or FALLBACK_NAME),
                "GIT_COMMITTER_EMAIL": str(email or FALLBACK_EMAIL),
            }
        with repo.git.custom_environment(**env):
            repo.git.commit("--no-verify", "--quiet", "-m", message)
        return Commit(repo.head.commit.hexsha, fallback)
    except git.GitCommandError as exc:
        lines = [line.strip() for line in (exc.stderr or str(exc)).strip().splitlines() if line.strip()]
        detail = lines[-1].removeprefix("stderr:").strip().strip("'\"") if lines else str(exc)
        raise EnvironmentProblem(
            f"git failed in the new service: {detail}",
            hint="fix git (see the message) or pass --no-git",
        ) from None
