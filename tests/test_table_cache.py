from __future__ import annotations

import json

import pytest

from apigen_envs.table_cache import cache_dir, cached_tables


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("APIGEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("APIGEN_TABLE_CACHE_DIR", raising=False)
    monkeypatch.delenv("APIGEN_TABLE_CACHE", raising=False)


def _source(tmp_path, rows):
    path = tmp_path / "db.json"
    path.write_text(json.dumps(rows))
    return path


def test_second_load_of_the_same_file_skips_the_build(tmp_path):
    path = _source(tmp_path, {"t": {"a": {"v": 50}}})
    builds = []

    def build():
        builds.append(1)
        return json.loads(path.read_text())

    first = cached_tables([path], "tag", build)
    second = cached_tables([path], "tag", build)
    assert first == second == {"t": {"a": {"v": 50}}} and len(builds) == 1
    assert type(second["t"]["a"]["v"]) is int  # types survive the cache (50 stays 50)
    assert list(cache_dir().glob("*.marshal"))


def test_changed_content_or_tag_rebuilds(tmp_path):
    path = _source(tmp_path, {"t": {"a": {"v": 1}}})
    builds = []

    def build():
        builds.append(1)
        return json.loads(path.read_text())

    cached_tables([path], "tag", build)
    path.write_text(json.dumps({"t": {"a": {"v": 2}}}))
    assert cached_tables([path], "tag", build)["t"]["a"]["v"] == 2
    cached_tables([path], "other tag", build)
    assert len(builds) == 3


def test_a_damaged_entry_is_rebuilt_and_errors_are_not_cached(tmp_path):
    path = _source(tmp_path, {"t": {}})
    cached_tables([path], "tag", lambda: {"t": {}})
    for entry in cache_dir().glob("*.marshal"):
        entry.write_bytes(b"\x00garbage")
    assert cached_tables([path], "tag", lambda: {"t": {"x": {}}}) == {"t": {"x": {}}}

    def failing():
        raise ValueError("bad row")

    other = _source(tmp_path / "..", {"u": {}})
    with pytest.raises(ValueError, match="bad row"):
        cached_tables([other], "tag", failing)
    with pytest.raises(ValueError, match="bad row"):
        cached_tables([other], "tag", failing)


def test_the_cache_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("APIGEN_TABLE_CACHE", "0")
    path = _source(tmp_path, {"t": {}})
    builds = []
    for _ in range(2):
        cached_tables([path], "tag", lambda: builds.append(1) or {"t": {}})
    assert len(builds) == 2 and not cache_dir().exists()


def test_domain_load_from_the_cache_gives_the_same_snapshot(tmp_path):
    from apigen_envs.domains import airline, retail

    for module in (retail, airline):
        fresh = module.load(None)
        cached = module.load(None)
        assert cached.snapshot.content_hash() == fresh.snapshot.content_hash()


def test_table_cache_dir_of_its_own_wins(tmp_path, monkeypatch):
    from apigen_envs.table_cache import cache_dir

    assert cache_dir() == tmp_path / "cache" / "tables"
    monkeypatch.setenv("APIGEN_TABLE_CACHE_DIR", str(tmp_path / "tables-only"))
    assert cache_dir() == tmp_path / "tables-only"
