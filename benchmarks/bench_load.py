"""Domain load beside ``json.load`` of the same files (target: within 3x).

``json db`` reads the database file alone; ``json`` reads every JSON file the load reads (the database and
the task file), which is the baseline the target is stated against.

``cold`` validates every row (the table cache turned off); ``warm`` reads the validated tables from the
cache a first load wrote (:mod:`apigen_envs.table_cache`). Run: ``pytest benchmarks/bench_load.py
--benchmark-only``; compare the medians of the ``json`` and ``load`` rows of one domain.
"""

from __future__ import annotations

import json

import pytest

from apigen_envs.domains import airline, retail

MODULES = {"retail": retail, "airline": airline}


@pytest.mark.parametrize("domain", sorted(MODULES))
def test_json_load_db(benchmark, domain):
    path = MODULES[domain].DATA / "db.json"
    benchmark(lambda: json.loads(path.read_bytes()))


@pytest.mark.parametrize("domain", sorted(MODULES))
def test_json_load(benchmark, domain):
    files = [MODULES[domain].DATA / name for name in ("db.json", "tasks.json")]
    benchmark(lambda: [json.loads(path.read_bytes()) for path in files])


@pytest.mark.parametrize("mode", ["cold", "warm"])
@pytest.mark.parametrize("domain", sorted(MODULES))
def test_load(benchmark, domain, mode, monkeypatch, tmp_path):
    monkeypatch.setenv("APIGEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("APIGEN_TABLE_CACHE", "0" if mode == "cold" else "1")
    module = MODULES[domain]
    module.load(None)  # warms the cache (warm) and the imports
    benchmark(module.load, None)
