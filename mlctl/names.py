"""Service names and the other names that end up in Kubernetes, Helm and image references."""

from __future__ import annotations

import re
import sys

#: A service name becomes a Helm release, a Deployment, a Service and pod names
#: (``<name>-<10 chars>-<5 chars>``, which must stay a 63-character DNS label), an image
#: repository and a Python package. 40 leaves room for those suffixes and an environment suffix.
MAX_SERVICE_NAME = 40

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

# --- reserved names ---------------------------------------------------------------------------------
# A service name is also a Python package (``fraud_scorer``) imported from the service's directory, so
# it must not shadow a module the service, its tests or its dependencies import: ``os`` cannot even be
# imported, ``torch`` breaks ``pip install``. It is also a Kubernetes name in every namespace it is
# deployed to, and the prefix of the namespaces ``mlctl new`` scaffolds (``NAME-staging``).

#: Standard-library modules removed since Python 3.10 (PEP 594, PEP 632): a service on an older
#: Python still imports them, whatever Python mlctl itself runs on.
# fmt: off
_REMOVED_STDLIB = frozenset({
    "aifc", "asynchat", "asyncore", "audioop", "cgi", "cgitb", "chunk", "crypt", "distutils", "imghdr", "imp",
    "lib2to3", "mailcap", "msilib", "nis", "nntplib", "ossaudiodev", "pipes", "smtpd", "sndhdr", "spwd", "sunau",
    "telnetlib", "uu", "xdrlib",
})
# fmt: on
#: ``sys.stdlib_module_names`` leaves out the ``test`` package, which ships with CPython all the same.
_STDLIB_EXTRA = frozenset({"test"})

#: What a generated service installs and imports, by import name and distribution name: its own
#: dependencies (torch, mlctl-serve, pytest, hatchling) and theirs, uvicorn[standard] and torch's CUDA
#: wheels included. tests/test_new.py checks this list against the installed dependency closure.
# fmt: off
SERVICE_DEPENDENCIES = frozenset({
    "anyio", "certifi", "charset_normalizer", "click", "colorama", "dotenv", "exceptiongroup", "filelock", "fsspec",
    "functorch", "h11", "hatchling", "httpcore", "httptools", "httpx", "idna", "iniconfig", "isympy", "jinja2",
    "markupsafe", "mpmath", "networkx", "numpy", "nvidia", "orjson", "packaging", "pathspec", "pip", "pluggy",
    "prometheus_client", "py", "pygments", "pytest", "python_dotenv", "pyyaml", "setuptools", "sniffio",
    "starlette", "sympy", "tomli", "tomlkit", "torch", "torchgen", "triton", "trove_classifiers",
    "typing_extensions", "urllib3", "uvicorn", "uvloop", "watchfiles", "websockets", "wheel", "yaml",
})
# fmt: on
#: mlctl's own distributions (and their packages): a service by that name would replace mlctl itself.
MLCTL_DISTRIBUTIONS = frozenset({"mlctl", "mlctl_serve"})
#: Top-level paths of the templates: a package there would clash with them (``tests/``) or be left out
#: of git and the image with them (``weights/`` is ignored: weights are made, not committed).
TEMPLATE_PATHS = frozenset({"tests", "weights"})
#: Kubernetes: ``kubernetes`` is the API server's Service in ``default``; ``default`` and the ``kube-``
#: prefix are the system namespaces' (and the scaffold names namespaces after the service). Helm
#: reserves no release names beyond their format (a DNS-1123 name of at most 53 characters), which
#: the rules above already keep.
KUBERNETES_NAMES = frozenset({"kubernetes", "default"})
KUBERNETES_PREFIX = "kube-"


def reserved_name_problem(name: str) -> str | None:
    """Say why a (well-formed) service name is reserved, or return None."""
    package = package_name(name)
    if name in KUBERNETES_NAMES or name.startswith(KUBERNETES_PREFIX):
        what = f"names starting with {KUBERNETES_PREFIX!r}" if name.startswith(KUBERNETES_PREFIX) else repr(name)
        return f"is reserved: Kubernetes keeps {what} for itself"
    if package in MLCTL_DISTRIBUTIONS:
        return f"is reserved: {package!r} is mlctl's own package"
    if package in sys.stdlib_module_names or package in _REMOVED_STDLIB or package in _STDLIB_EXTRA:
        return f"is reserved: its Python package {package!r} would shadow the standard-library module {package!r}"
    if package in SERVICE_DEPENDENCIES:
        return f"is reserved: its Python package {package!r} would shadow {package!r}, which the service depends on"
    if package in TEMPLATE_PATHS:
        return f"is reserved: the service's {package}/ directory has that name"
    return None


def service_name_problem(name: str) -> str | None:
    """Say what is wrong with a service name, or return None when it is valid.

    Valid names are DNS-1035 labels (lowercase letters, digits and ``-``, starting with a letter,
    not ending with ``-``) of at most :data:`MAX_SERVICE_NAME` characters, and not reserved
    (:func:`reserved_name_problem`).
    """
    if name == "":
        return "must not be empty"
    if len(name) > MAX_SERVICE_NAME:
        return (
            f"is {len(name)} characters long; the limit is {MAX_SERVICE_NAME} "
            "(it becomes Kubernetes, Helm and pod names)"
        )
    if "_" in name:
        return "contains '_'; use '-' between words"
    if name != name.lower():
        return "contains uppercase letters; use lowercase letters, digits and '-'"
    if not name[0].isalpha():
        return "must start with a letter"
    if name.endswith("-"):
        return "must not end with '-'"
    if not _DNS_LABEL.match(name):
        bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c == "-"))})
        return "contains " + ", ".join(repr(c) for c in bad) + "; use lowercase letters, digits and '-'"
    return reserved_name_problem(name)


def suggest_service_name(name: str) -> str | None:
    """A valid name close to ``name`` (``Fraud_Scorer`` -> ``fraud-scorer``), or None."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not slug:
        return None
    if not slug[0].isalpha():
        slug = "svc-" + slug
    slug = slug[:MAX_SERVICE_NAME].rstrip("-")
    if reserved_name_problem(slug):
        slug = slug.removeprefix(KUBERNETES_PREFIX)
        if service_name_problem(slug) is not None:
            slug = slug[: MAX_SERVICE_NAME - len("-service")].rstrip("-") + "-service"
    return slug if service_name_problem(slug) is None and slug != name else None


def package_name(service: str) -> str:
    """The Python package of a service: ``fraud-scorer`` -> ``fraud_scorer``."""
    return service.replace("-", "_")


def dns_label_problem(value: str, *, max_length: int = 63) -> str | None:
    """Say what is wrong with an RFC 1123 label (namespaces, environment names), or None."""
    if not value:
        return "must not be empty"
    if len(value) > max_length:
        return f"is {len(value)} characters long; the limit is {max_length}"
    if not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", value):
        return "must be lowercase letters, digits and '-', starting and ending with a letter or digit"
    return None


def branch_name_problem(branch: str) -> str | None:
    r"""Say why ``branch`` is not a git branch name, or return None.

    The rules of ``git check-ref-format --branch``: no component starting with ``.`` or ending with
    ``.lock``, no ``..``, no control characters, space, ``~ ^ : ? * [ \\``, no ``@{``, not ``@``, no
    leading, trailing or doubled ``/``, no trailing ``.``, and not starting with ``-``.
    """
    if not branch:
        return "must not be empty"
    bad = sorted({c for c in branch if ord(c) < 0x20 or ord(c) == 0x7F or c in " ~^:?*[\\"})
    if bad:
        return "must not contain " + ", ".join(repr(c) for c in bad) + " (git refuses them in branch names)"
    if branch.startswith("-"):
        return "must not start with '-'"
    if branch == "@" or branch == "HEAD":
        return f"cannot be {branch!r}"
    if "@{" in branch:
        return "must not contain '@{'"
    if ".." in branch:
        return "must not contain '..'"
    if branch.startswith("/") or branch.endswith("/") or "//" in branch:
        return "must not start or end with '/' or hold '//'"
    if branch.endswith("."):
        return "must not end with '.'"
    for part in branch.split("/"):
        if part.startswith("."):
            return f"has a part starting with '.' ({part!r})"
        if part.endswith(".lock"):
            return f"has a part ending with '.lock' ({part!r})"
    return None
