"""The service image's build context, without an engine: what is collected, and what is refused as a secret.

A hostile corpus of credential files (by path, anywhere in the tree) and of secrets inside code (by
content, scanned with the real detect-secrets) is refused file by file, naming where and why; files
people do ship pass. The secrets are assembled when the tests run, so that this repository holds none
that a scanner of its own would find. The image side (what reaches the engine) is in
test_build_context.py.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
import subprocess
import sys
from pathlib import Path

import pytest
from building import git

from mlctl.adapters.git import source_state, source_url
from mlctl.adapters.secrets import detector_version
from mlctl.errors import InputError
from mlctl.images.context import (
    SecretsFound,
    check_secrets,
    collect,
    is_metadata,
    secret_file,
)
from mlctl.reporting import RecordingReporter

_RANDOM = random.Random(13)


def _token(length: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(_RANDOM.choice(alphabet) for _ in range(length))


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def refusal(root: Path, *allow: str, memo: Path | None = None) -> list[str]:
    """The lines ``check_secrets`` refuses the tree with (none: it passed)."""
    try:
        check_secrets(root, collect(root, None), allow, memo=memo)
    except SecretsFound as exc:
        return exc.lines()
    return []


# --- by path: credential files anywhere in the tree ------------------------------------------------------

CREDENTIAL_FILES = {
    ".env": "an environment file",
    "deploy/.env.production": "an environment file",
    "config/prod.env": "an environment file",
    "pkg/.envrc": "an environment file",
    "home/.docker/config.json": "a Docker registry login",
    "ci/.dockercfg": "a Docker registry login",
    "ops/.kube/config": "a kubeconfig",
    "ops/kubeconfig": "a kubeconfig",
    "ops/staging.kubeconfig": "a kubeconfig",
    "nested/deep/.git-credentials": "git's stored credentials",
    "a/.netrc": "a netrc file",
    "a/_netrc": "a netrc file",
    "db/.pgpass": "a PostgreSQL password file",
    "db/.my.cnf": "a MySQL client config",
    "x/.vault-token": "a Vault token",
    "x/.aws/credentials": "AWS CLI credentials",
    "x/.aws/config": "AWS CLI credentials",
    "x/.s3cfg": "an s3cmd or boto config",
    "x/.config/gcloud/credentials.db": "gcloud's credentials",
    "x/.config/gcloud/access_tokens.db": "gcloud's credentials",
    "x/.config/gcloud/legacy_credentials/me@example.com/adc.json": "gcloud's credentials",
    "x/.config/gcloud/application_default_credentials.json": "gcloud's credentials",
    "keys/my-service-account-key.json": "a Google service account key",
    "gcp/credentials.json": "a Google service account key",
    "oauth/client_secret_123.json": "an OAuth client secret",
    "x/.azure/accessTokens.json": "Azure CLI's credentials",
    "x/.azure/msal_token_cache.json": "Azure CLI's credentials",
    "x/.azure/service_principal_entries.json": "Azure CLI's credentials",
    "x/.cache/huggingface/token": "a Hugging Face token",
    "x/.kaggle/kaggle.json": "a Kaggle API key",
    "infra/terraform.tfstate": "a Terraform credentials file, state or variables",
    "infra/prod.tfvars": "a Terraform credentials file, state or variables",
    ".streamlit/secrets.toml": "an app's secrets file",
    "x/.ssh/id_rsa": "an SSH private key",
    "x/.ssh/known_hosts": "a file of an .ssh directory",
    "keys/id_ed25519": "an SSH private key",
    "keys/deploy_rsa": "an SSH private key",
    "keys/server.ppk": "an SSH private key",
    "certs/tls.pem": "a private key or certificate bundle",
    "certs/tls.key": "a private key or certificate bundle",
    "certs/bundle.p12": "a private key or certificate bundle",
    "certs/bundle.pfx": "a private key or certificate bundle",
    "java/release.jks": "a keystore",
    "java/app.keystore": "a keystore",
    "vault/passwords.kdbx": "a keystore",
    "x/.gnupg/secring.gpg": "a GnuPG secret keyring",
    "vpn/office.ovpn": "an OpenVPN profile",
    "web/.htpasswd": "an htpasswd file",
    "x/.bash_history": "a shell or database client history",
    "x/.psql_history": "a shell or database client history",
    "CREDENTIALS": "a cloud credentials file",
    "ID_RSA": "an SSH private key",
}


@pytest.mark.parametrize("path", sorted(CREDENTIAL_FILES))
def test_credential_files_are_refused_by_path_anywhere(isolated: Path, path: str) -> None:
    write(isolated, {"app.py": "print('hi')\n", path: "not a real one\n"})
    [line] = refusal(isolated)
    assert line.startswith(f"secret in the build context: {path} ({CREDENTIAL_FILES[path]}")


@pytest.mark.parametrize(
    ("path", "content", "secret"),
    [
        (".npmrc", "registry=https://npm.example.com/\n", False),
        (".npmrc", "//npm.example.com/:_authToken=${NPM_TOKEN}\n", True),
        ("web/.npmrc", "_auth = c2VjcmV0\n", True),
        (".pypirc", "[distutils]\nindex-servers = pypi\n", False),
        (".pypirc", "[pypi]\nusername = __token__\npassword = not-real\n", True),
        (".yarnrc.yml", "nodeLinker: node-modules\n", False),
        (".yarnrc.yml", "npmAuthToken: not-real\n", True),
    ],
)
def test_package_manager_configs_count_only_with_a_token(path: str, content: str, secret: bool) -> None:
    assert (secret_file(path, content.encode()) is not None) is secret
    assert secret_file(path) is not None  # by name alone (no content to read), they count


@pytest.mark.parametrize(
    "path",
    [
        "environment.md",
        "environment.yml",
        "env.py",
        "pkg/envs/base.py",
        ".envoy/envoy.yaml",
        "credentials.py",
        "pkg/credentials_test.py",
        "aws/credentials.md",
        "keys.py",
        "tokenizer/vocab.json",
        "pkg/keyboard.py",
        "certs/ca.crt",
        "docs/ssh.md",
        "my_rsa_notes.txt",
    ],
)
def test_ordinary_files_are_not_credentials(path: str) -> None:
    assert secret_file(path, b"x = 1\n") is None


# --- by content: detect-secrets over every file of the code layer ------------------------------------------


def secrets_in_code() -> dict[str, tuple[str, int, str]]:
    """File name -> (content, line, what detect-secrets calls it), a fresh fake secret in each."""
    upper = string.ascii_uppercase + string.digits
    return {
        "pkg/aws.py": (f'import os\nKEY = "AKIA{_token(16, upper)}"\n', 2, "AWS Access Key"),
        "pkg/tls.txt": ("-----BEGIN " + "RSA PRIVATE KEY-----\nMIIE\n", 1, "Private Key"),
        "pkg/gh.py": (f'\n\nT = "gh{"p"}_{_token(36)}"\n', 3, "GitHub Token"),
        "pkg/gitlab.py": (f'G = "gl{"pat"}-{_token(20)}"\n', 1, "GitLab Token"),
        "pkg/slack.py": (
            f'S = "xo{"xb"}-{_token(12, string.digits)}-{_token(13, string.digits)}-{_token(24)}"\n',
            1,
            "Slack Token",
        ),
        "pkg/stripe.py": (f'S = "sk_{"live"}_{_token(24)}"\n', 1, "Stripe Access Key"),
        "pkg/jwt.py": (
            f'J = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.{_token(43, string.ascii_letters + "-_")}"\n',
            1,
            "JSON Web Token",
        ),
        "config/db.yaml": (f"name: x\nurl: https://admin:{_token(14)}@db.example.com/x\n", 2, "Basic Auth Credentials"),
        "config/settings.py": (f'DEBUG = False\npassword = "{_token(14)}"\n', 2, "Secret Keyword"),
        "config/app.yaml": (f"api_key: {_token(32)}\n", 1, "Secret Keyword"),
        "config/app.ini": (f"[db]\nhost = x\npassword = {_token(16)}\n", 3, "Secret Keyword"),
        "pkg/blob.py": (f'BLOB = "{_token(40, string.ascii_letters + "+/")}"\n', 1, "Base64 High Entropy String"),
        "pkg/hexed.py": (f'H = "{_token(40, "0123456789abcdef")}"\n', 1, "Hex High Entropy String"),
        "pkg/hf.py": (f'HF = "hf_{_token(34)}"\n', 1, "Base64 High Entropy String"),
        "pkg/npm.txt": (f"//registry.npmjs.org/:_authToken={_token(36, '0123456789abcdef-')}\n", 1, "NPM tokens"),
    }


def test_secrets_inside_code_are_refused_with_the_file_the_line_and_the_kind(isolated: Path) -> None:
    corpus = secrets_in_code()
    write(isolated, {"app.py": "print('hi')\n", **{name: content for name, (content, _, _) in corpus.items()}})
    lines = refusal(isolated)
    assert len(lines) == len(corpus)  # one line per file
    for line, name in zip(lines, sorted(corpus), strict=True):
        _, number, kind = corpus[name]
        assert line.startswith(f"secret in the build context: {name}:{number} (detect-secrets found: ")
        assert kind in line
    text = "\n".join(lines)
    for content, _, _ in corpus.values():  # the lines name the secrets, never show them
        assert all(word not in text for word in content.split() if len(word) > 20)


def test_every_line_of_a_file_is_named_and_the_error_carries_them_all(isolated: Path) -> None:
    write(isolated, {"pkg/conf.py": "".join(f'password{n} = "{_token(14)}"\n' for n in range(8))})
    with pytest.raises(SecretsFound) as caught:
        check_secrets(isolated, collect(isolated, None))
    assert caught.value.lines() == [
        "secret in the build context: pkg/conf.py:1 "
        "(detect-secrets found: Secret Keyword; also lines 2, 3, 4, 5, 6, ...)"
    ]
    assert caught.value.exit_code == 4
    data = caught.value.to_data()
    assert data["secrets"] == [
        {"path": "pkg/conf.py", "reason": "detect-secrets found: Secret Keyword", "lines": [1, 2, 3, 4, 5, 6, 7, 8]}
    ]
    assert data["message"] == "refusing to build: 1 file of the image's code looks like secrets: pkg/conf.py"
    assert "--allow-secrets PATH" in data["hint"]
    assert "nothing was built" in data["hint"]


def test_a_line_allowlisted_for_detect_secrets_passes(isolated: Path) -> None:
    """detect-secrets' own rule: a line with ``pragma: allowlist secret`` is not reported."""
    write(isolated, {"pkg/conf.py": f'password = "{_token(14)}"  # pragma: allowlist secret\n'})
    assert refusal(isolated) == []


def test_files_that_never_ship_are_not_scanned(isolated: Path) -> None:
    write(
        isolated,
        {
            ".dockerignore": "local/\n",
            "local/.env": "A=1\n",
            "local/conf.py": f'password = "{_token(14)}"\n',
            ".git/config": f"[remote]\nurl = https://me:{_token(14)}@example.com/r\n",
            ".github/workflows/ci.yml": f"password: {_token(14)}\n",
            ".venv/lib/conf.py": f'password = "{_token(14)}"\n',
            "app.py": "print('hi')\n",
        },
    )
    assert refusal(isolated) == []


@pytest.mark.parametrize("template", ["pytorch-predict", "pytorch-generate"])
def test_the_services_mlctl_writes_pass(cli, isolated: Path, template: str) -> None:
    result = cli("new", "clean-svc", "--template", template, "--set", "accelerator=cpu", "--yes", "--no-git")
    assert result.exit_code == 0, result.stderr
    service = isolated / "clean-svc"
    files = collect(service, None)
    assert len(files.code) > 5
    check_secrets(service, files)


def test_a_file_with_bytes_that_are_not_text_is_scanned_without_a_crash(isolated: Path) -> None:
    write(isolated, {"pkg/data.bin": bytes(range(256)) * 4, "pkg/latin1.txt": "caf\xe9\n".encode("latin-1")})
    assert refusal(isolated) == []


# --- --allow-secrets PATH ------------------------------------------------------------------------------------


def test_allow_secrets_lets_in_exactly_the_paths_it_names(isolated: Path) -> None:
    write(
        isolated,
        {
            "certs/ca.pem": "-----BEGIN CERTIFICATE-----\n",
            "certs/other.pem": "-----BEGIN CERTIFICATE-----\n",
            "pkg/conf.py": f'password = "{_token(14)}"\n',
            "deploy/.env": "A=1\n",
            "deploy/.env.prod": "A=1\n",
        },
    )
    assert refusal(isolated, "certs/ca.pem", "./pkg/conf.py") == [
        "secret in the build context: certs/other.pem (a private key or certificate bundle)",
        "secret in the build context: deploy/.env (an environment file)",
        "secret in the build context: deploy/.env.prod (an environment file)",
    ]
    assert refusal(isolated, "certs/ca.pem", "pkg/conf.py", "certs/other.pem", "deploy/") == []
    assert refusal(isolated, str(isolated / "certs"), "pkg/conf.py", "deploy") == []


@pytest.mark.parametrize(
    ("allow", "message"),
    [
        ("nope.pem", "--allow-secrets nope.pem: no file of the image's code is there"),
        ("local/.env", "--allow-secrets local/.env: no file of the image's code is there"),
        ("../outside.pem", "--allow-secrets ../outside.pem: lies outside the service directory"),
        ("/etc/passwd", "--allow-secrets /etc/passwd: lies outside the service directory"),
        (".", "--allow-secrets .: names the whole service"),
        ("certs/..", "--allow-secrets certs/..: names the whole service"),
        ("--push", "--allow-secrets --push: takes the PATH of a file meant to ship (as a refusal names it)"),
        ("", "--allow-secrets '': takes the PATH of a file meant to ship (as a refusal names it)"),
        ("a\nb", "--allow-secrets a\\nb: no file of the image's code is there"),
    ],
)
def test_allow_secrets_paths_that_name_nothing_are_refused(isolated: Path, allow: str, message: str) -> None:
    write(isolated, {".dockerignore": "local/\n", "local/.env": "A=1\n", "certs/ca.pem": "x\n"})
    with pytest.raises(InputError) as caught:
        check_secrets(isolated, collect(isolated, None), [allow])
    assert caught.value.lines() == [message]
    assert caught.value.hint


@pytest.mark.parametrize("value", [True, "certs/ca.pem", [True]])
def test_the_old_blanket_switch_is_an_error_with_a_hint(isolated: Path, value: object) -> None:
    write(isolated, {"certs/ca.pem": "x\n"})
    with pytest.raises(InputError, match="allow_secrets takes a list of the paths") as caught:
        check_secrets(isolated, collect(isolated, None), value)  # type: ignore[arg-type]
    assert "the blanket switch is gone" in (caught.value.hint or "")


def test_the_cli_option_wants_a_path(cli, service: Path) -> None:
    import os

    os.chdir(service)
    result = cli("build", "--allow-secrets")
    assert result.exit_code == 2  # a usage error: the option takes a value
    assert "'--allow-secrets' requires an argument" in result.stderr
    assert "--allow-secrets PATH" in cli("build", "--help").stdout


# --- the memory of clean files ---------------------------------------------------------------------------------


def test_clean_files_are_scanned_once_and_changed_ones_again(isolated: Path, tmp_path: Path) -> None:
    memo = tmp_path / "memo.json"
    write(isolated, {"a.py": "A = 1\n", "b.py": "B = 2\n"})

    def scanned() -> list[str]:
        reporter = RecordingReporter()
        check_secrets(isolated, collect(isolated, None), memo=memo, reporter=reporter)
        return [message for kind, message in reporter.events if kind == "step"]

    assert scanned() == ["scanning 2 files of the code for secrets (1 KiB)"]
    assert scanned() == []
    (isolated / "b.py").write_text(f'password = "{_token(14)}"\n')
    with pytest.raises(SecretsFound):
        scanned()
    with pytest.raises(SecretsFound):  # a secret is never remembered as clean
        scanned()
    (isolated / "b.py").write_text("B = 3\n")
    assert scanned() == ["scanning 1 file of the code for secrets (1 KiB)"]
    (isolated / "c.py").write_text("B = 3\n")  # the same content under another name: scanned
    assert scanned() == ["scanning 1 file of the code for secrets (1 KiB)"]
    # Another version of detect-secrets may find what this one missed: nothing is taken from its memo.
    data = json.loads(memo.read_text())
    assert data["detector"] == detector_version()
    memo.write_text(json.dumps({**data, "detector": "detect-secrets 0.1"}))
    assert scanned() == ["scanning 3 files of the code for secrets (1 KiB)"]
    memo.write_text("{not json")
    assert scanned() == ["scanning 3 files of the code for secrets (1 KiB)"]


def test_the_weights_pin_in_mlctl_yaml_passes_and_other_hex_strings_do_not(isolated: Path, tmp_path: Path) -> None:
    """model.sha256 is the digest of the weights (public by nature), yet detect-secrets' hex-entropy
    detector flags any long hex string: the pin passes in mlctl.yaml, by value, and nothing else does."""
    pin = hashlib.sha256(b"public weights").hexdigest()
    config = f"name: svc\nmodel:\n  source: uri\n  uri: https://example.com/w.pt\n  sha256: {pin}\n"
    write(isolated, {"mlctl.yaml": config, "app.py": "print('hi')\n"})
    memo = tmp_path / "memo.json"

    def lines(weights_sha256: str | None) -> list[str]:
        try:
            check_secrets(isolated, collect(isolated, None), memo=memo, weights_sha256=weights_sha256)
        except SecretsFound as exc:
            return exc.lines()
        return []

    hex_found = "(detect-secrets found: Hex High Entropy String)"
    assert lines(None) == [f"secret in the build context: mlctl.yaml:5 {hex_found}"]  # what the detector does
    assert lines(pin) == []
    # Found clean with the pin is not clean without it: the memo keeps the two apart.
    assert lines(None) == [f"secret in the build context: mlctl.yaml:5 {hex_found}"]
    assert lines(pin.upper()) == []  # as `sha256sum` or a user writes it
    # Another hex string beside the pin, and the pin's value in another file, are still refused.
    other = _token(40, "0123456789abcdef")
    write(isolated, {"mlctl.yaml": config + f"env:\n  TOKEN: '{other}'\n", "pkg/pinned.py": f'P = "{pin}"\n'})
    assert lines(pin) == [
        f"secret in the build context: mlctl.yaml:7 {hex_found}",
        f"secret in the build context: pkg/pinned.py:1 {hex_found}",
    ]
    # A pin that is not the value written there lets nothing through.
    write(isolated, {"mlctl.yaml": config, "pkg/pinned.py": "P = 1\n"})
    refused = [f"secret in the build context: mlctl.yaml:5 {hex_found}"]
    assert lines(hashlib.sha256(b"other weights").hexdigest()) == refused


def test_detect_secrets_loads_only_when_a_build_checks_code() -> None:
    code = "import sys, mlctl.cli.app, mlctl.images.context, mlctl.images.build; print('detect_secrets' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# --- repository metadata ---------------------------------------------------------------------------------------


def test_repository_metadata_and_ci_files_are_left_out_at_any_depth(isolated: Path) -> None:
    write(
        isolated,
        {
            "app.py": "print('hi')\n",
            ".gitignore": "x\n",
            ".gitattributes": "* text=auto\n",
            ".gitmodules": "",
            ".git": "gitdir: ../.git/worktrees/x\n",  # a worktree's .git is a file
            ".github/workflows/ci.yml": "on: push\n",
            ".gitlab-ci.yml": "build: {}\n",
            ".gitlab/CODEOWNERS": "* @x\n",
            ".gitlab-ci-local/state.yml": "x: 1\n",
            ".dockerignore": "# nothing\n",
            ".mlctl/build.json": "{}\n",
            ".circleci/config.yml": "x: 1\n",
            ".travis.yml": "x: 1\n",
            "Jenkinsfile": "pipeline {}\n",
            "azure-pipelines.yml": "x: 1\n",
            "bitbucket-pipelines.yml": "x: 1\n",
            ".drone.yml": "x: 1\n",
            "pkg/.gitignore": "x\n",
            "pkg/.gitkeep": "",
            "pkg/module.py": "x = 1\n",
            "pkg/.github/x.yml": "x: 1\n",
            "docs/github-actions.md": "how we use them\n",
        },
    )
    assert [f.path for f in collect(isolated, None).code] == ["app.py", "docs/github-actions.md", "pkg/module.py"]


def test_git_credentials_are_refused_not_left_out_quietly(isolated: Path) -> None:
    assert is_metadata(".git-credentials")
    write(isolated, {"app.py": "x = 1\n", ".git-credentials": "https://me:tok@example.com\n"})
    assert refusal(isolated) == ["secret in the build context: .git-credentials (git's stored credentials)"]


# --- the source label --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remote", "label"),
    [
        ("https://github.com/acme/fraud.git", "https://github.com/acme/fraud.git"),
        ("https://user:p@ss@host.example.com/r", "https://host.example.com/r"),
        ("https://user:p%40ss@host.example.com/r", "https://host.example.com/r"),
        ("https://x-access-token:tok@github.com/acme/r.git", "https://github.com/acme/r.git"),
        ("https://oauth2:tok@gitlab.example.com:8443/acme/r", "https://gitlab.example.com:8443/acme/r"),
        ("https://host.example.com/r?token=abc", "https://host.example.com/r"),
        ("https://host.example.com/r?private_token=abc#frag", "https://host.example.com/r"),
        ("https://host.example.com/r#access_token=abc", "https://host.example.com/r"),
        ("HTTPS://Host.Example.COM/Acme/R", "https://host.example.com/Acme/R"),
        ("ssh://git@host.example.com:2222/acme/r.git", "ssh://host.example.com:2222/acme/r.git"),
        ("git@github.com:acme/fraud.git", "ssh://github.com/acme/fraud.git"),
        ("deploy:s3cret@github.com:acme/fraud.git", "ssh://github.com/acme/fraud.git"),
        ("https://[::1]:8080/r", "https://[::1]:8080/r"),
        ("https://host.example.com/a b/$HOME\nLABEL x=1", "https://host.example.com/a%20b/%24HOME%0ALABEL%20x%3D1"),
        # A '/', '?' or '#' before the last '@': where the password ends cannot be told; no label.
        ("https://user:pa/ss@host.example.com/r", None),
        ("https://user:pa?ss@host.example.com/r", None),
        ("https://host.example.com/r?x=a@b", None),
        # Not an address other machines reach.
        ("/home/me/fraud", None),
        ("../fraud", None),
        ("file:///home/me/fraud", None),
        ("C:\\Users\\me\\fraud", None),
        ("https://not_a_host!/r", None),
        ("https://user:pass@/r", None),
    ],
)
def test_the_source_label_keeps_scheme_host_and_path_only(remote: str, label: str | None) -> None:
    assert source_url(remote) == label


def test_the_source_state_carries_the_cleaned_remote(isolated: Path) -> None:
    write(isolated, {"app.py": "x = 1\n"})
    git(isolated, "init", "-q", "-b", "main")
    git(isolated, "remote", "add", "origin", "https://user:p@ss@host.example.com/acme/r.git?token=abc")
    assert source_state(isolated).remote == "https://host.example.com/acme/r.git"
