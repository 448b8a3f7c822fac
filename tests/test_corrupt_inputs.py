"""Corrupt DB, tasks and episodes files give clear errors naming the file (and line or row)."""

from __future__ import annotations

import shutil

import pytest

from apigen_envs.domains import airline, mock, retail
from apigen_envs.episodes_io import load_episodes
from apigen_envs.errors import DataFileError

DOMAINS = {"mock": mock, "retail": retail, "airline": airline}


def copy_data(name, tmp_path):
    src = DOMAINS[name].DATA if hasattr(DOMAINS[name], "DATA") else None
    assert src is not None, f"{name} exposes no DATA folder"
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("name", sorted(DOMAINS))
@pytest.mark.parametrize("victim", ["db.json", "tasks.json"])
def test_truncated_files_name_the_file_and_line(name, victim, tmp_path):
    root = copy_data(name, tmp_path)
    path = root / victim
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFileError) as exc:
        DOMAINS[name].load(root)
    assert victim in str(exc.value) and ":" in str(exc.value).split(victim, 1)[1][:3]


@pytest.mark.parametrize("name", ["airline", "mock", "retail"])
def test_missing_db_file(name, tmp_path):
    root = copy_data(name, tmp_path)
    (root / "db.json").unlink()
    with pytest.raises(DataFileError, match="db.json"):
        DOMAINS[name].load(root)


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_task_with_wrong_shape_is_named(name, tmp_path):
    root = copy_data(name, tmp_path)
    (root / "tasks.json").write_text('[{"id": 5, "scenario": 3}]', encoding="utf-8")
    with pytest.raises(DataFileError, match="tasks.json"):
        DOMAINS[name].load(root)


def test_binary_garbage_episodes_file(tmp_path):
    path = tmp_path / "eps.jsonl"
    path.write_bytes(b"\x00\xff\xfe garbage\n")
    with pytest.raises(DataFileError, match="eps.jsonl:1"):
        load_episodes([path])
