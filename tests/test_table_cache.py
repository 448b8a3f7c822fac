from __future__ import annotations

import json
import subprocess
import sys

import pydantic
import pytest

from apigen_envs.table_cache import cache_dir, cached_tables, schema_tag


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


_TAG_SCRIPT = (
    "import hashlib; from domains.retail import TABLES; from apigen_envs.table_cache import schema_tag; "
    "print(hashlib.sha256(schema_tag(m for m, _ in TABLES.values()).encode()).hexdigest())"
)


def test_schema_tag_is_the_same_in_every_process():
    # The core schema's repr carries object ids and addresses; left in, no process would ever hit the cache.
    tags = {
        subprocess.run([sys.executable, "-c", _TAG_SCRIPT], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    }
    assert len(tags) == 1 and next(iter(tags)).strip()


def test_schema_tag_changes_with_a_field_or_a_constraint():
    # Same class name and module each time: only the definition differs.
    def row(**fields):
        return pydantic.create_model("Row", **fields)

    plain = row(name=(str, ...), price=(float, ...))
    renamed = row(title=(str, ...), price=(float, ...))
    bounded = row(name=(str, ...), price=(float, pydantic.Field(ge=0)))
    retyped = row(name=(str, ...), price=(int, ...))
    tags = [schema_tag([m]) for m in (plain, renamed, bounded, retyped)]
    assert len(set(tags)) == 4
    assert schema_tag([row(name=(str, ...), price=(float, ...))]) == tags[0]
