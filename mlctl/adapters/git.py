"""The only module that imports gitpython."""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlctl.errors import EnvironmentProblem

FALLBACK_NAME = "mlctl"
FALLBACK_EMAIL = "mlctl@localhost"


@dataclass(frozen=True)
class Commit:
    """A commit mlctl made."""

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


@dataclass(frozen=True)
class SourceState:
    """Where a service's files stand in git, for image tags and labels."""

    #: Full commit SHA of HEAD (None outside a git repository or before the first commit).
    commit: str | None
    #: The git tree object of the service directory at HEAD.
    tree: str | None
    #: Uncommitted changes (tracked or untracked, not ignored) under the service directory.
    dirty: bool
    #: A hash of the service's files as they are on disk (tracked and untracked, not ignored).
    content_hash: str
    #: The `origin` remote as the source label may show it (``source_url``), if there is one.
    remote: str | None


def source_state(directory: Path) -> SourceState:
    """Read HEAD, the service's tree and the working-tree state of ``directory``."""
    git = _git()
    try:
        repo = git.Repo(directory, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return SourceState(None, None, True, _hash_files(directory, _walk(directory)), None)
    root = Path(repo.working_tree_dir or directory).resolve()
    relative = directory.resolve().relative_to(root).as_posix()
    scope = "." if relative == "." else relative
    listed = repo.git.ls_files("-co", "--exclude-standard", "--", scope).splitlines()
    files = sorted(root / name for name in listed if (root / name).is_file())
    content = _hash_files(root, files)
    try:
        head = repo.head.commit
    except ValueError:  # no commit yet
        return SourceState(None, None, True, content, _remote(repo))
    tree = head.tree if relative == "." else head.tree / relative
    dirty = bool(repo.git.status("--porcelain", "--", scope).strip())
    return SourceState(head.hexsha, tree.hexsha, dirty, content, _remote(repo))


def _walk(directory: Path) -> list[Path]:
    skip = {".git", ".mlctl", "__pycache__", ".venv", ".pytest_cache"}
    return sorted(p for p in directory.rglob("*") if p.is_file() and not skip & set(p.relative_to(directory).parts))


def _hash_files(root: Path, files: list[Path]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _remote(repo: object) -> str | None:
    try:
        url = str(repo.remotes.origin.url)  # type: ignore[attr-defined]
    except (AttributeError, IndexError):
        return None
    return source_url(url)


#: Schemes of remotes other machines can reach (a file:// remote names a directory of this machine).
_NETWORK_SCHEMES = ("https", "http", "ssh", "git", "git+ssh", "ssh+git", "ftp", "ftps")
_DNS_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
#: A host name or a bracketed IPv6 address, with an optional port.
_HOST = re.compile(rf"(?:{_DNS_LABEL}(?:\.{_DNS_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?")
#: git's scp-like syntax, [user@]host:path: recognised only with no slash before the first colon.
_SCP = re.compile(r"(?:[^/@]*@)?([^/:@]+):(?!//)([^?#]*)")


def source_url(remote: str) -> str | None:
    """A git remote as the image's source label: scheme, host and path, and nothing else.

    Everything up to the last '@' of the address goes (user and password, '@' in the password
    included), and so do the query and the fragment (``?token=``). The scp-like
    ``git@host:org/repo.git`` becomes ``ssh://host/org/repo.git``. None, and so no label, for a
    local path or a ``file://`` remote (it names a directory of this machine), for a host that is
    no host name, and for an address with a '/', '?' or '#' before its last '@' (where a password
    would end is then anyone's guess: nothing of it may reach the label).
    """
    remote = remote.strip()
    scheme, sep, rest = remote.partition("://")
    if sep:
        scheme = scheme.lower()
        if scheme not in _NETWORK_SCHEMES:
            return None
    else:
        scp = _SCP.fullmatch(remote)
        if scp is None or len(scp.group(1)) == 1:  # C:\\repo is a Windows path, as git reads it
            return None
        scheme, rest = "ssh", f"{scp.group(1)}/{scp.group(2).lstrip('/')}"
    userinfo, at, rest = rest.rpartition("@")  # no user or password, even one with '@' in it
    if at and re.search(r"[/?#]", userinfo):
        return None  # a '/', '?' or '#' before the last '@': where the password ends is anyone's guess
    rest = re.split(r"[?#]", rest, maxsplit=1)[0]
    host, _, path = rest.partition("/")
    if not _HOST.fullmatch(host):
        return None
    path = urllib.parse.quote(path, safe="/-._~%+")
    return f"{scheme}://{host.lower()}" + (f"/{path}" if path else "")


def merge_file(ours: str, base: str, theirs: str, labels: tuple[str, str, str]) -> tuple[str, int]:
    """Three-way merge of one text file (``git merge-file``).

    Three-way merge of one text file (``git merge-file``): the merged text, with conflict markers
    labelled ``labels`` (ours, base, theirs) where both sides changed the same lines, and their count.
    """
    import subprocess
    import tempfile

    _git()  # the same clear error when git is missing
    with tempfile.TemporaryDirectory(prefix="mlctl-merge-") as scratch:
        paths = []
        for name, text in (("ours", ours), ("base", base), ("theirs", theirs)):
            path = Path(scratch) / name
            path.write_text(text, encoding="utf-8")
            paths.append(str(path))
        done = subprocess.run(
            ["git", "merge-file", "-p", "-L", labels[0], "-L", labels[1], "-L", labels[2], *paths],
            capture_output=True,
            text=True,
        )
    if done.returncode < 0 or done.returncode > 127:
        raise EnvironmentProblem(f"git merge-file failed: {done.stderr.strip()}")
    return done.stdout, done.returncode  # the exit status is the number of conflicts


def is_dirty(directory: Path) -> bool | None:
    """Uncommitted changes (untracked files included) under ``directory``; None outside a git repository."""
    git = _git()
    try:
        repo = git.Repo(directory, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None
    return bool(repo.git.status("--porcelain", "--untracked-files=normal", "--", str(directory)).strip())
