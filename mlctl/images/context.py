"""What goes into the service image from the service directory.

The code (minus .dockerignore and the repository's metadata), the weights (a layer of their own),
and nothing that looks like a secret unless the user names it with ``--allow-secrets PATH``.

Secrets are looked for two ways before anything is built, in every file the code layer would hold:
by path (credential files of common tools, anywhere in the tree: ``SECRET_FILES``) and by content
(detect-secrets, through ``mlctl.adapters.secrets``). A file found either way stops the build with
one line per file: where, and why. Files detect-secrets found clean are remembered by path and
content in mlctl's cache, so an unchanged file is not scanned again.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlctl.contract import APP_DIR
from mlctl.errors import InputError
from mlctl.reporting import NullReporter, Reporter

#: Never part of an image, whatever .dockerignore says: directories of tools and caches, at any depth.
ALWAYS_LEFT_OUT = (".git", ".mlctl", ".venv", "venv", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache")
#: The repository's metadata and CI files, left out at any depth (files and directories, by name).
#: ``.git*`` covers .git, .github/, .gitignore, .gitattributes, .gitmodules, .gitlab-ci.yml, .gitlab/
#: and gitlab-ci-local's .gitlab-ci-local/; .git-credentials is refused as a secret instead (below).
METADATA = (
    ".git*",
    ".dockerignore",
    ".mlctl",
    ".circleci",
    ".travis.yml",
    ".buildkite",
    ".drone.yml",
    ".woodpecker",
    ".woodpecker.yml",
    "Jenkinsfile",
    "azure-pipelines.yml",
    "bitbucket-pipelines.yml",
    "appveyor.yml",
    ".appveyor.yml",
)


@dataclass(frozen=True)
class SecretFile:
    """A kind of credential file: the globs of the last components of its path, and what it is.

    ``patterns`` match the end of a file's path, one glob per component, without regard to case:
    ``.aws/credentials`` matches ``svc/.aws/credentials`` but not ``aws/credentials.md``.
    With ``content``, the file counts only when its text matches too (an .npmrc without a token is
    just settings).
    """

    patterns: tuple[str, ...]
    what: str
    content: str | None = None


def _files(what: str, *patterns: str, content: str | None = None) -> SecretFile:
    return SecretFile(patterns, what, content)


#: Credential files refused by path, anywhere in the tree: the files that gitrob's file signatures
#: and the tools' own documentation say hold credentials.
SECRET_FILES = (
    _files("an environment file", ".env*", "*.env"),
    _files("a Docker registry login", ".docker/config.json", ".dockercfg"),
    _files("a kubeconfig", ".kube/config", "kubeconfig", "kubeconfig.*", "*.kubeconfig"),
    _files("git's stored credentials", ".git-credentials"),
    _files("a netrc file of logins", ".netrc", "_netrc"),
    _files("a PostgreSQL password file", ".pgpass"),
    _files("a MySQL client config with a password", ".my.cnf", ".mylogin.cnf"),
    _files("a Vault token", ".vault-token"),
    _files("AWS CLI credentials or config", ".aws/credentials", ".aws/config"),
    _files("an s3cmd or boto config", ".s3cfg", ".boto"),
    _files(
        "gcloud's credentials",
        "gcloud/credentials.db",
        "gcloud/access_tokens.db",
        "gcloud/legacy_credentials/*/*",
        "application_default_credentials.json",
        "adc.json",
    ),
    _files("a Google service account key", "*service-account*.json", "*service_account*.json", "credentials.json"),
    _files("an OAuth client secret", "client_secret*.json"),
    _files(
        "Azure CLI's credentials",
        ".azure/accessTokens.json",
        ".azure/msal_token_cache.*",
        ".azure/service_principal_entries.*",
        ".azure/azureProfile.json",
    ),
    _files("an Azure publish profile", "*.publishsettings", "*.pubxml.user"),
    _files("a cloud credentials file", "credentials", ".credentials"),
    _files("a Hugging Face token", "huggingface/token", "huggingface/stored_tokens"),
    _files("a Kaggle API key", "kaggle.json"),
    _files(
        "a Terraform credentials file, state or variables",
        ".terraformrc",
        "terraform.rc",
        "credentials.tfrc.json",
        "*.tfstate",
        "*.tfstate.backup",
        "*.tfvars",
    ),
    _files(
        "an app's secrets file",
        "secrets.toml",
        "secrets.y*ml",
        "secrets.json",
        "secrets.ini",
    ),
    _files(
        "an SSH private key",
        "id_rsa",
        "id_dsa",
        "id_ecdsa",
        "id_ecdsa_sk",
        "id_ed25519",
        "id_ed25519_sk",
        "*_rsa",
        "*_dsa",
        "*_ecdsa",
        "*_ed25519",
        "*.ppk",
    ),
    _files("a file of an .ssh directory", ".ssh/*"),
    _files("a private key or certificate bundle", "*.pem", "*.key", "*.p12", "*.pfx", "*.pkcs12", "*.p8"),
    _files("a keystore", "*.jks", "*.keystore", "*.bks", "*.kdb", "*.kdbx", "*.keychain", "*.psafe3"),
    _files("a GnuPG secret keyring", "secring.*", ".gnupg/*"),
    _files("an OpenVPN profile", "*.ovpn"),
    _files("an htpasswd file", ".htpasswd", "htpasswd"),
    _files("a shell or database client history", ".*_history", ".history"),
    _files("an .npmrc with a registry token", ".npmrc", content=r"(?im)^\s*\S*_(authToken|auth|password)\s*="),
    _files("a .pypirc with a password", ".pypirc", content=r"(?im)^\s*password\s*[:=]"),
    _files("a Yarn config with a registry token", ".yarnrc.yml", content=r"(?im)^\s*npmAuth(Token|Ident)\s*:"),
    _files("a Cargo or RubyGems credentials file", ".cargo/credentials", ".cargo/credentials.toml", ".gem/credentials"),
)


#: detect-secrets' name for a long hex string: what a sha256 digest is reported as.
HEX_FINDING = "Hex High Entropy String"


@dataclass(frozen=True)
class ContextFile:
    """A file of the build context: its path in the context, content and mode."""

    path: str
    content: bytes
    mode: int


@dataclass(frozen=True)
class ServiceFiles:
    """The service's files for its image: the code and the weights apart."""

    code: tuple[ContextFile, ...]
    weights: tuple[ContextFile, ...]
    #: Where the weights go in the image (the directory of model.path, under contract.APP_DIR).
    weights_dir: str

    def digest(self, files: tuple[ContextFile, ...]) -> str:
        total = hashlib.sha256()
        for f in files:
            total.update(f"{f.path}\0{f.mode:o}\0".encode() + hashlib.sha256(f.content).digest())
        return total.hexdigest()


def collect(service_dir: Path, weights_path: str | None) -> ServiceFiles:
    """Read the files the service image is made of.

    Left out: what .dockerignore names, symbolic links, ``ALWAYS_LEFT_OUT`` and ``METADATA``. Files
    that look like secrets are collected (``check_secrets`` refuses them before anything is built).

    Raises:
        InputError: the weights are missing.
    """
    from mlctl.adapters.docker import dockerignore_filter

    ignore_file = service_dir / ".dockerignore"
    patterns = ignore_file.read_text().splitlines() if ignore_file.is_file() else []
    patterns = [p.strip() for p in patterns if p.strip() and not p.strip().startswith("#")]
    ignored = dockerignore_filter(str(service_dir), patterns)
    weights_root = (service_dir / weights_path).resolve() if weights_path else None

    code: list[ContextFile] = []
    for root, dirs, names in os.walk(service_dir):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if d not in ALWAYS_LEFT_OUT and not is_metadata(d))
        for name in sorted(names):
            path = here / name
            relative = path.relative_to(service_dir).as_posix()
            if ignored(relative) or path.is_symlink() or not path.is_file():
                continue
            if is_metadata(name) and secret_file(relative) is None:
                continue
            if weights_root is not None and (path.resolve() == weights_root or weights_root in path.resolve().parents):
                continue  # the weights travel in their own layer
            code.append(ContextFile(relative, path.read_bytes(), _mode(path)))

    weights: list[ContextFile] = []
    weights_dir = f"{APP_DIR}/weights"
    if weights_root is not None:
        if not weights_root.exists():
            raise InputError(
                f"the weights {weights_path} do not exist",
                hint="make them first (mlctl.yaml model.prepare; `mlctl run` does it too) or fix model.path",
            )
        base = weights_root if weights_root.is_dir() else weights_root.parent
        weights_dir = f"{APP_DIR}/" + base.relative_to(service_dir.resolve()).as_posix()
        members = sorted(p for p in weights_root.rglob("*") if p.is_file()) if weights_root.is_dir() else [weights_root]
        weights = [ContextFile(p.relative_to(base).as_posix(), p.read_bytes(), 0o644) for p in members]

    return ServiceFiles(tuple(code), tuple(weights), weights_dir)


def is_metadata(name: str) -> bool:
    """Whether a file or directory name is the repository's metadata or a CI file (``METADATA``)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in METADATA)


def secret_file(relative: str, content: bytes | None = None) -> str | None:
    """What kind of credential file ``relative`` is (``SECRET_FILES``), or None.

    Args:
        relative: The file's path in the service directory, '/' between directories.
        content: The file's content, for the kinds that count only with a token inside; None
            counts them by name alone.
    """
    parts = relative.lower().split("/")
    for kind in SECRET_FILES:
        for pattern in kind.patterns:
            globs = pattern.lower().split("/")
            if len(globs) <= len(parts) and all(
                fnmatch.fnmatchcase(part, glob) for part, glob in zip(parts[-len(globs) :], globs, strict=True)
            ):
                if kind.content is None or content is None:
                    return kind.what
                if re.search(kind.content, content.decode("utf-8", "replace")):
                    return kind.what
    return None


@dataclass(frozen=True)
class Secret:
    """A file of the code layer that looks like a secret: where, and why (never the secret itself)."""

    #: The file's path in the service directory.
    path: str
    #: Why it looks like a secret: the kind of credential file, or what detect-secrets found.
    reason: str
    #: The lines detect-secrets found something on (none for a file refused by its path).
    lines: tuple[int, ...] = ()

    def __str__(self) -> str:
        where = _printable(self.path) + (f":{self.lines[0]}" if self.lines else "")
        more = ""
        if len(self.lines) > 1:
            shown = ", ".join(str(n) for n in self.lines[1:6]) + (", ..." if len(self.lines) > 6 else "")
            more = f"; also line{'s' if len(self.lines) > 2 else ''} {shown}"
        return f"{where} ({self.reason}{more})"


class SecretsFound(InputError):
    """Files of the code layer look like secrets: nothing is built. One line per file."""

    def __init__(self, secrets: Sequence[Secret]) -> None:
        names = ", ".join(_printable(s.path) for s in secrets[:5]) + (
            f" and {len(secrets) - 5} more" if len(secrets) > 5 else ""
        )
        super().__init__(
            f"refusing to build: {len(secrets)} file{'s' if len(secrets) > 1 else ''} of the image's code "
            f"look{'' if len(secrets) > 1 else 's'} like secrets: {names}",
            hint="nothing was built; leave them out with .dockerignore, or pass --allow-secrets PATH for each "
            "file that is meant to ship (detect-secrets lets a line ending in '# pragma: allowlist secret' pass)",
        )
        self.secrets = tuple(secrets)

    def lines(self) -> list[str]:
        return [f"secret in the build context: {secret}" for secret in self.secrets]

    def to_data(self) -> dict[str, Any]:
        """The error, with every file (path, reason, lines)."""
        data = super().to_data()
        data["secrets"] = [{"path": s.path, "reason": s.reason, "lines": list(s.lines)} for s in self.secrets]
        return data


def check_secrets(
    service_dir: Path,
    files: ServiceFiles,
    allow: Sequence[str] = (),
    *,
    memo: Path | None = None,
    weights_sha256: str | None = None,
    reporter: Reporter | None = None,
) -> None:
    """Refuse the code layer when a file of it looks like a secret.

    Every file is checked by path (``SECRET_FILES``) and then scanned with detect-secrets; files
    ``allow`` names (``--allow-secrets PATH``) are let through. The weights' pin in mlctl.yaml
    (``model.sha256``) is the digest of the weights, public by nature: detect-secrets' hex-entropy
    finding of exactly that value in mlctl.yaml is not reported; any other hex string still is.

    Args:
        service_dir: The service directory ``files`` were collected from.
        files: What ``collect`` found.
        allow: Paths relative to the service directory (a file, or a directory for the files under it).
        memo: A JSON file remembering the files found clean by path and content (None: no memory).
        weights_sha256: mlctl.yaml's ``model.sha256`` (64 hex digits), or None.
        reporter: Progress.

    Raises:
        InputError: an ``allow`` path names no file of the code layer, or names the whole service.
        SecretsFound: files look like secrets; one line each.
    """
    from mlctl.adapters import secrets as detector

    reporter = reporter or NullReporter()
    allowed = allowed_paths(service_dir, allow, [f.path for f in files.code])
    found: dict[str, Secret] = {}
    to_scan: list[ContextFile] = []
    for f in files.code:
        if f.path in allowed:
            continue
        what = secret_file(f.path, f.content)
        if what is not None:
            found[f.path] = Secret(f.path, what)
        else:
            to_scan.append(f)

    from mlctl.config import CONFIG_FILE

    public = []
    if weights_sha256 is not None:
        public.append(detector.NotASecret(CONFIG_FILE, HEX_FINDING, weights_sha256.removeprefix("sha256:")))
    version = detector.detector_version()
    known = _read_memo(memo, version)
    # A file found clean with a value let through is clean for that value only: the value joins the key.
    keys = {f.path: _memo_key(f, *(p.value for p in public if p.path == f.path)) for f in to_scan}
    unscanned = [f for f in to_scan if keys[f.path] not in known]
    unknown = [f.path for f in unscanned]
    if unknown:
        kib = max(1, round(sum(len(f.content) for f in unscanned) / 1024))
        plural = "s" if len(unknown) > 1 else ""
        reporter.step(f"scanning {len(unknown)} file{plural} of the code for secrets ({kib} KiB)")
    detections = detector.scan(service_dir, unknown, public)
    by_path: dict[str, list[Any]] = {}
    for d in detections:
        by_path.setdefault(d.path, []).append(d)
    for path, hits in by_path.items():
        kinds = list(dict.fromkeys(d.kind for d in hits))
        lines = tuple(sorted({d.line for d in hits}))
        found[path] = Secret(path, "detect-secrets found: " + ", ".join(kinds), lines)
    clean = [keys[p] for p in unknown if p not in by_path]
    if clean:
        _write_memo(memo, version, known, clean)
    if found:
        raise SecretsFound([found[path] for path in sorted(found)])


def allowed_paths(service_dir: Path, allow: Sequence[str], paths: Sequence[str]) -> frozenset[str]:
    """The files of ``paths`` that ``--allow-secrets`` lets through.

    Raises:
        InputError: a path names no file of ``paths``, lies outside the service, names the whole
            service, or is a flag (the old ``--allow-secrets`` took no value).
    """
    from mlctl.scaffold.templates import shown as shown_value

    if isinstance(allow, bool | str) or not all(isinstance(raw, str) for raw in allow):
        raise InputError(
            f"allow_secrets takes a list of the paths of the files meant to ship, not {shown_value(allow)}",
            hint="pass allow_secrets=['path/in/the/service', ...] (the blanket switch is gone)",
        )
    outside = "only files of the service go into its image: give their paths relative to the service directory"
    allowed: set[str] = set()
    for raw in allow:
        shown = _printable(raw)
        if not raw.strip() or raw.startswith("-"):
            raise InputError(
                f"--allow-secrets {shown or repr(raw)}: takes the PATH of a file meant to ship (as a refusal names it)",
                hint="e.g. --allow-secrets certs/ca.pem; repeat it for each file (there is no blanket switch)",
            )
        if os.path.isabs(raw):
            try:
                relative = Path(raw).resolve().relative_to(service_dir.resolve()).as_posix()
            except ValueError:
                raise InputError(f"--allow-secrets {shown}: lies outside the service directory", hint=outside) from None
        else:
            relative = posixpath.normpath(raw.replace(os.sep, "/"))
        if relative == ".":
            raise InputError(
                f"--allow-secrets {shown}: names the whole service",
                hint="name each file (or the directory) meant to ship: there is no blanket switch",
            )
        if relative == ".." or relative.startswith("../"):
            raise InputError(f"--allow-secrets {shown}: lies outside the service directory", hint=outside)
        matched = [p for p in paths if p == relative or p.startswith(relative + "/")]
        if not matched:
            raise InputError(
                f"--allow-secrets {shown}: no file of the image's code is there",
                hint="give the path relative to the service directory, as the refusal names it "
                "(files .dockerignore leaves out never reach the image)",
            )
        allowed.update(matched)
    return frozenset(allowed)


def _memo_key(f: ContextFile, *public: str) -> str:
    key = f.path.encode("utf-8", "surrogateescape") + b"\0" + hashlib.sha256(f.content).digest()
    for value in public:
        key += b"\0" + value.encode()
    return hashlib.sha256(key).hexdigest()


#: How many clean files the memo remembers (the newest).
MEMO_LIMIT = 50_000


def _read_memo(memo: Path | None, version: str) -> dict[str, None]:
    """The keys of the files found clean, oldest first (empty when detect-secrets changed since)."""
    if memo is None:
        return {}
    try:
        data = json.loads(memo.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("detector") != version or not isinstance(data.get("clean"), list):
        return {}
    return dict.fromkeys(key for key in data["clean"] if isinstance(key, str))


def _write_memo(memo: Path | None, version: str, known: dict[str, None], clean: list[str]) -> None:
    from mlctl.atomic import replace_file

    if memo is None:
        return
    keys = list(dict.fromkeys([*known, *clean]))[-MEMO_LIMIT:]
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        replace_file(memo, json.dumps({"detector": version, "clean": keys}).encode())
    except OSError:
        pass  # a cache that cannot be written only costs a scan next time


def _printable(text: str) -> str:
    """A path as one line: characters that could break it (newlines, escapes) written as escapes."""
    return text if text.isprintable() else text.encode("unicode_escape", "backslashreplace").decode("ascii")


def _mode(path: Path) -> int:
    return 0o755 if os.access(path, os.X_OK) else 0o644
