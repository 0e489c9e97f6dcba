"""Kubernetes quantities: enough arithmetic for memory (adding /dev/shm to the memory limit)."""

from __future__ import annotations

import re
from decimal import Decimal

_SUFFIXES = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_PATTERN = re.compile(r"^([+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")


def to_bytes(quantity: str) -> int:
    """``"1.5Gi"`` -> 1610612736. Raises ValueError for anything else (CPU millis included)."""
    found = _PATTERN.match(quantity.strip())
    if not found:
        raise ValueError(f"{quantity!r} is not a memory quantity")
    number, suffix = found.group(1), found.group(2) or ""
    return int(Decimal(number) * _SUFFIXES[suffix])


def from_bytes(value: int) -> str:
    """The shortest exact form, in binary units when one divides: 5368709120 -> ``"5Gi"``."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = _SUFFIXES[suffix]
        if value >= unit and value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)


def add(*quantities: str) -> str:
    """The sum of Kubernetes quantities, in the largest binary unit that keeps it whole."""
    return from_bytes(sum(to_bytes(q) for q in quantities))
