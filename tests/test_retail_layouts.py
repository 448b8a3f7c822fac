"""Retail data loading: embedded data, the tau2-bench layout, the tau-bench v1 layout, and bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apigen_envs import load_domain
from apigen_envs.baselines.noop import NoopAgent
from apigen_envs.baselines.oracle import OracleAgent
from apigen_envs.domains.retail import DATA, load
from apigen_envs.env import ToolUseEnv
from apigen_envs.errors import DataFileError
from apigen_envs.testing import run_episode


@pytest.fixture(scope="module")
def embedded():
    return load_domain("retail")


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def _v1_dir(tmp_path: Path, embedded, tasks) -> Path:
    """A tau-bench v1 directory made from the embedded DB's rows that the tasks touch."""
    db = json.loads((DATA / "db.json").read_text())
    users = {t.user_id for t in tasks}
    orders = {o for u in users for o in db["users"][u]["orders"]}
    v1_users = {}
    for user_id in users:
        row = dict(db["users"][user_id])
        del row["user_id"]  # v1 users.json rows have no user_id field
        v1_users[user_id] = row
    _write(tmp_path / "users.json", v1_users)
    _write(tmp_path / "orders.json", {o: db["orders"][o] for o in orders})
    _write(tmp_path / "products.json", db["products"])
    return tmp_path


def _v1_task(task) -> dict:
    return {
        "annotator": "0",
        "user_id": task.user_id,
        "instruction": task.instruction,
        "actions": [{"name": a.name, "kwargs": a.arguments} for a in task.actions],
        "outputs": list(task.outputs),
    }


def test_embedded_data(embedded):
    assert embedded.name == "retail" and embedded.source == "embedded"
    assert embedded.snapshot.size() == {"products": 50, "users": 500, "orders": 1000}
    assert len(embedded.splits["train"]) == 175 and len(embedded.splits["test"]) == 36
    assert "Identify the customer first" in embedded.policy
    assert load_domain("retail") is embedded  # loaded once per process


def test_v1_layout_loads_and_replays(tmp_path, embedded):
    train, test = embedded.task_list("train")[:4], embedded.task_list("test")[:3]
    root = _v1_dir(tmp_path, embedded, [*train, *test])
    _write(root / "tasks_train.json", [_v1_task(t) for t in train])
    _write(root / "tasks_test.json", [_v1_task(t) for t in test])
    (root / "wiki.md").write_text("# v1 wiki policy\n")
    domain = load(root)
    assert domain.source == str(root)
    assert domain.policy == "# v1 wiki policy\n"
    assert domain.snapshot.size()["products"] == 50
    assert domain.semantics.name == "tau-bench"
    # v1's split files are read in its own order: test, train, dev
    assert list(domain.tasks) == [f"test_{i}" for i in range(3)] + [f"train_{i}" for i in range(4)]
    assert domain.splits == {
        "test": tuple(f"test_{i}" for i in range(3)),
        "train": tuple(f"train_{i}" for i in range(4)),
    }
    # v1 rows are kept exactly as read: no user_id is added to a users.json row
    row = domain.snapshot.tables["users"][train[0].user_id]
    assert "user_id" not in row and row == json.loads((root / "users.json").read_text())[train[0].user_id]
    env = ToolUseEnv(domain, max_turns=60)
    for original, (task_id, task) in zip([*test, *train], domain.tasks.items(), strict=True):
        assert task.actions == original.actions and task.outputs == original.outputs
        assert task.reward_basis == ("db", "outputs") and task.provenance["source"] == "tau-bench"
        assert not domain.verifier.gold(task).errors
        assert run_episode(env, OracleAgent(), task_id=task_id)[0] == 1.0
        assert run_episode(env, NoopAgent(), task_id=task_id)[0] == 0.0


def test_v1_single_tasks_file_and_policy_file(tmp_path, embedded):
    tasks = embedded.task_list("train")[:2]
    root = _v1_dir(tmp_path, embedded, tasks)
    _write(root / "tasks.json", [_v1_task(t) for t in tasks])
    # A v1 directory brings its own policy: wiki.md, else policy.md; neither is an error naming wiki.md.
    with pytest.raises(DataFileError, match=r"wiki\.md: policy file not found"):
        load(root)
    (root / "policy.md").write_text(embedded.policy)
    domain = load(root)
    assert list(domain.tasks) == ["test_0", "test_1"] and domain.policy == embedded.policy
    assert domain.task("test_1").split == "test"
    (root / "wiki.md").write_text("# wiki\n")
    assert load(root).policy == "# wiki\n"


def test_tau2_layout_converts_tasks(tmp_path, embedded):
    (tmp_path / "db.json").write_bytes((DATA / "db.json").read_bytes())
    (tmp_path / "policy.md").write_text(embedded.policy)
    source = embedded.task_list("train")[0]
    tau2 = {
        "id": "7",
        "description": {"purpose": "cancel check", "relevant_policies": None, "notes": None},
        "user_scenario": {
            "persona": "Terse.",
            "instructions": {
                "domain": "retail",
                "reason_for_call": "You want to act.",
                "known_info": source.scenario.known_info,
                "unknown_info": None,
                "task_instructions": "Say yes.",
            },
        },
        "initial_state": None,
        "evaluation_criteria": {
            "actions": [
                {"action_id": f"7_{i}", "name": a.name, "arguments": a.arguments, "info": None}
                for i, a in enumerate(source.actions)
            ],
            "communicate_info": ["42"],
            "nl_assertions": ["Agent says 42."],
            "reward_basis": ["DB", "COMMUNICATE", "NL_ASSERTION"],
        },
    }
    _write(tmp_path / "tasks.json", [tau2])
    _write(tmp_path / "split_tasks.json", {"train": ["7"], "test": [], "base": ["7", "missing"]})
    domain = load(tmp_path)
    assert domain.semantics.name == "tau2"
    task = domain.task("7")
    assert task.split == "train" and domain.splits == {"train": ("7",), "base": ("7",)}
    assert task.user_id == source.user_id
    assert task.reward_basis == ("db", "outputs")
    assert task.outputs == ("42",) and task.nl_assertions == ("Agent says 42.",)
    assert task.description == "cancel check"
    assert task.instruction == (
        f"Persona:\nTerse.\n\nReason for call:\nYou want to act.\n\nKnown info:\n{source.scenario.known_info}"
        "\n\nTask instructions:\nSay yes."
    )
    assert task.actions == source.actions
    env = ToolUseEnv(domain)
    assert run_episode(env, OracleAgent(), task_id="7")[0] == 1.0


def test_load_through_registry_and_env_var(tmp_path, embedded, monkeypatch):
    (tmp_path / "retail").mkdir()
    (tmp_path / "retail" / "db.json").write_bytes((DATA / "db.json").read_bytes())
    (tmp_path / "retail" / "policy.md").write_text(embedded.policy)
    _write(tmp_path / "retail" / "tasks.json", [embedded.task_list()[0].model_dump(mode="json")])
    domain = load_domain("retail", tmp_path)  # a parent holding retail/ is accepted, like tau2's data/
    assert domain.source == str((tmp_path / "retail").resolve()) and len(domain.tasks) == 1
    monkeypatch.setenv("APIGEN_DATA_DIR", str(tmp_path / "retail"))
    assert load_domain("retail") is domain


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "no retail data: expected db.json"),
        ({"db.json": '{\n  "users": [\n'}, r"db.json:3:1: invalid JSON"),
        ({"db.json": "[]"}, "db.json: expected a JSON object with products, users and orders"),
        ({"db.json": '{"users": {}, "orders": {}}'}, r"db.json: missing table\(s\) \['products'\]"),
        ({"db.json": '{"products": [], "users": {}, "orders": {}}'}, "table 'products' must be a JSON object"),
        (
            {"db.json": '{"products": {}, "users": {"u1": {"user_id": "u1"}}, "orders": {}}'},
            r"db.json: users row 'u1': name: Field required",
        ),
        (
            {
                "db.json": json.dumps(
                    {"products": {"p": {"name": "x", "product_id": "q", "variants": {}}}, "users": {}, "orders": {}}
                )
            },
            r"products row 'p': its product_id is 'q', not the row key",
        ),
        ({"db.json": '{"products": {"p": 3}, "users": {}, "orders": {}}'}, r"row 'p': expected a JSON object"),
        ({"db.json": '{"products": {}, "users": {}, "orders": {}, "extra": {}}'}, r"unknown table\(s\) \['extra'\]"),
        ({"db.json": '{"products": {}, "users": {}, "orders": {}}'}, r"policy.md: policy file not found"),
        ({"users.json": "{}", "orders.json": "{}"}, r"products.json: file not found"),
        ({"users.json": "{}", "orders.json": "{}", "products.json": "{"}, r"products.json:1:2: invalid JSON"),
    ],
)
def test_bad_data_files_raise_data_file_error(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(DataFileError, match=message):
        load(tmp_path)


def test_bad_task_files_name_the_task(tmp_path, embedded):
    (tmp_path / "db.json").write_bytes((DATA / "db.json").read_bytes())
    (tmp_path / "policy.md").write_text(embedded.policy)
    good = embedded.task_list()[0].model_dump(mode="json")
    _write(tmp_path / "tasks.json", [good, {"id": "x"}])
    with pytest.raises(DataFileError, match=r"tasks.json: task #1: unknown task format"):
        load(tmp_path)
    _write(tmp_path / "tasks.json", [good, {"id": "x", "scenario": {}}])
    with pytest.raises(DataFileError, match=r"(?s)tasks.json: task #1: .*scenario.instruction"):
        load(tmp_path)
    _write(tmp_path / "tasks.json", {"not": "a list"})
    with pytest.raises(DataFileError, match="expected a JSON list of tasks"):
        load(tmp_path)
    _write(tmp_path / "tasks.json", [good])
    (tmp_path / "split_tasks.json").write_text('{"train": "0"}')
    with pytest.raises(DataFileError, match="split_tasks.json: expected a JSON object mapping split names"):
        load(tmp_path)
    (tmp_path / "split_tasks.json").unlink()
    bad_action = {**good, "id": "y", "actions": [{"name": "cancel_order", "arguments": {}}]}
    _write(tmp_path / "tasks.json", [good, bad_action])
    with pytest.raises(DataFileError, match=r"tasks.json: task 'y' action #0: unknown tool 'cancel_order'"):
        load(tmp_path)


def test_gold_arguments_the_schema_rejects(tmp_path, embedded):
    """Our own data: refused at load. A peer's published data: kept, and the call fails at replay as in the
    peer (tau-bench's retail test task 34 sends ``province`` where the tool takes ``state``)."""
    task = next(t for t in embedded.task_list() if t.actions and t.actions[-1].name == "modify_pending_order_address")
    broken = [a.model_dump(mode="json") for a in task.actions]
    args = broken[-1]["arguments"]
    args["province"] = args.pop("state")
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "db.json").write_bytes((DATA / "db.json").read_bytes())
    (ours / "policy.md").write_text(embedded.policy)
    _write(ours / "tasks.json", [{**task.model_dump(mode="json"), "actions": broken}])
    with pytest.raises(DataFileError, match=r"action #\d+: invalid arguments for modify_pending_order_address"):
        load(ours)
    (tmp_path / "v1").mkdir()
    v1 = _v1_dir(tmp_path / "v1", embedded, [task])
    record = _v1_task(task)
    record["actions"][-1]["kwargs"] = args
    _write(v1 / "tasks_test.json", [record])
    (v1 / "wiki.md").write_text(embedded.policy)
    peer = load(v1)
    assert peer.semantics.name == "tau-bench"
    (loaded,) = peer.task_list("test")
    gold = peer.verifier.gold(loaded)
    assert gold.errors and "province" in str(gold.errors)
    assert not any(c for c in gold.changes if "address" in str(c)), "the failed call must not change the address"


def test_bad_v1_tasks(tmp_path, embedded):
    root = _v1_dir(tmp_path, embedded, embedded.task_list("train")[:1])
    _write(root / "tasks_test.json", [{"user_id": "u", "instruction": "x", "actions": [{"kwargs": {}}]}])
    with pytest.raises(DataFileError, match=r"(?s)tasks_test.json: task #0: .*Action.name"):
        load(root)


def test_missing_directory(tmp_path):
    with pytest.raises(DataFileError, match="retail data directory not found"):
        load(tmp_path / "nope")
