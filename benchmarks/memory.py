"""Helpers shared by the benchmark suites."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any


def bytes_per_item(make: Callable[[], Any], n: int = 1000) -> float:
    """Average traced bytes held per live object after creating ``n`` of them with ``make``.

    Args:
        make: Builds one live object (e.g. an env after reset and one write).
        n: How many to keep alive.

    Returns:
        Bytes per object (allocations still held after all ``n`` exist).
    """
    make()  # warm caches (gold outcomes, indexes) so they are not charged to the envs
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.take_snapshot()
    alive = [make() for _ in range(n)]
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    total = sum(stat.size_diff for stat in after.compare_to(base, "filename"))
    del alive
    return total / n
