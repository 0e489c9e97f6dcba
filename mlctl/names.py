"""Service names and the other names that end up in Kubernetes, Helm and image references."""

from __future__ import annotations

import re

#: A service name becomes a Helm release, a Deployment, a Service and pod names
#: (``<name>-<10 chars>-<5 chars>``, which must stay a 63-character DNS label), an image
#: repository and a Python package. 40 leaves room for those suffixes and an environment suffix.
MAX_SERVICE_NAME = 40

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def service_name_problem(name: str) -> str | None:
    """Say what is wrong with a service name, or return None when it is valid.

    Valid names are DNS-1035 labels (lowercase letters, digits and ``-``, starting with a letter,
    not ending with ``-``) of at most :data:`MAX_SERVICE_NAME` characters.
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
    return None


def suggest_service_name(name: str) -> str | None:
    """A valid name close to ``name`` (``Fraud_Scorer`` -> ``fraud-scorer``), or None."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not slug:
        return None
    if not slug[0].isalpha():
        slug = "svc-" + slug
    slug = slug[:MAX_SERVICE_NAME].rstrip("-")
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
