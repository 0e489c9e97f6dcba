"""The order the suite hands to pytest-xdist's work stealing (conftest.longest_first)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from conftest import longest_first


@dataclass
class Item:
    """What longest_first reads of a test item: its id and its ``long`` marker."""

    nodeid: str
    seconds: float | None = None

    def get_closest_marker(self, name: str) -> Any:
        return pytest.mark.long(self.seconds).mark if name == "long" and self.seconds is not None else None


def slices(items: list[Any], workers: int) -> list[list[str]]:
    """What work stealing sends each worker first: len // workers, then a share of the rest (xdist's rule)."""
    out, left = [], list(items)
    for slot in range(workers):
        size = len(left) // (workers - slot)
        out.append([i.nodeid for i in left[:size]])
        del left[:size]
    return out


def test_each_long_test_heads_its_own_slice_largest_first() -> None:
    short = [Item(f"s{i}") for i in range(20)]
    long = [Item("gitlab", 200), Item("github", 150), Item("readme", 110), Item("root", 95), Item("demo", 90)]
    items = short[:7] + long[:2] + short[7:15] + long[2:] + short[15:]
    ordered = longest_first(items, 4)  # type: ignore[arg-type]
    assert sorted(i.nodeid for i in ordered) == sorted(i.nodeid for i in items)  # nothing lost or doubled
    heads = [s[0] for s in slices(ordered, 4)]
    assert heads == ["gitlab", "github", "readme", "root"]
    # The fifth goes where the least work was expected so far: behind root (95, against 200, 150 and 110).
    assert slices(ordered, 4)[3][:2] == ["root", "demo"]
    # The short tests keep their order.
    assert [i.nodeid for i in ordered if i.seconds is None] == [i.nodeid for i in short]


def test_without_long_tests_or_workers_the_order_stands() -> None:
    items = [Item(f"s{i}") for i in range(5)]
    assert longest_first(items, 4) == items  # type: ignore[arg-type]
    with_long = [Item("a"), Item("b", 60)]
    assert longest_first(with_long, 1) == with_long  # type: ignore[arg-type]
