"""Airline data: embedded DB and tasks, tau2 peer data, tau-bench v1 layout, generator, proposer, Gymnasium."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from apigen_envs.baselines.noop import NoopAgent
from apigen_envs.baselines.oracle import OracleAgent
from apigen_envs.domains.airline import build_snapshot, load
from apigen_envs.domains.airline.generate import generate_db
from apigen_envs.domains.airline.generate import main as generate_main
from apigen_envs.domains.airline.templates import INTENTS, propose
from apigen_envs.env import ToolUseEnv
from apigen_envs.errors import DataFileError
from apigen_envs.simulators.scripted_user import ScriptedUser
from apigen_envs.testing import run_episode

PEER_AIRLINE = (
    Path(os.environ.get("APIGEN_PEERS_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "peers" / "tau2"))
    / "airline"
)


@pytest.fixture(scope="module")
def embedded():
    return load(None)


@pytest.fixture(scope="module")
def peer():
    if not (PEER_AIRLINE / "db.json").exists():
        pytest.skip(f"tau2 peer data not found at {PEER_AIRLINE}")
    return load(PEER_AIRLINE)


def run(domain, agent, task_id: str) -> float:
    env = ToolUseEnv(domain, user=ScriptedUser(), max_turns=60, strict=True)
    reward, _ = run_episode(env, agent, task_id=task_id)
    return reward


# ---------------------------------------------------------------- embedded data


def test_embedded_sizes_and_splits(embedded):
    assert embedded.snapshot.size() == {"flights": 300, "users": 500, "reservations": 2000}
    assert len(embedded.splits["train"]) == 175
    assert len(embedded.splits["test"]) == 39
    assert (Path(__file__).resolve().parents[1] / "domains/airline/data/db.json").stat().st_size < 8_000_000


def test_committed_tasks_replay_pass_oracle_and_fail_noop(embedded):
    intents = set()
    for task in embedded.task_list():
        gold = embedded.verifier.gold(task)
        assert gold.errors == [], task.id
        assert gold.changes or task.outputs, task.id
        assert task.provenance["proposer"] in ("template", "recombination")
        if task.provenance["proposer"] == "template":
            intents.add(task.provenance["intent"])
        assert run(embedded, OracleAgent(), task.id) == 1.0, task.id
        assert run(embedded, NoopAgent(), task.id) == 0.0, task.id
    assert intents == set(INTENTS)


def test_train_and_test_tasks_share_no_user(embedded):
    train = {t.user_id for t in embedded.task_list("train")}
    test = {t.user_id for t in embedded.task_list("test")}
    assert train and test and not train & test


def test_committed_db_matches_generator(embedded):
    raw = generate_db(seed=0, scale=1.0)
    dumped = embedded.snapshot.to_json()
    assert all(r.pop("status") is None for r in dumped["reservations"].values())
    assert dumped == raw


def test_committed_tasks_are_reproducible(tmp_path):
    # the embedded tasks are the phase-1 pipeline's output (template proposer, offline), byte for byte
    from apigen_envs.cli import main as cli_main

    out = tmp_path / "tasks.json"
    argv = ["blueprints", "--domain", "airline", "--n", "200", "--seed", "0", "--recombine", "20", "--quiet"]
    assert cli_main([*argv, "--out", str(out)]) == 0
    data = Path(__file__).resolve().parents[1] / "domains/airline/data"
    assert out.read_text() == (data / "tasks.json").read_text()
    assert (tmp_path / "tasks.stats.json").read_text() == (data / "tasks.stats.json").read_text()


@pytest.mark.parametrize("intent", INTENTS)
def test_propose_each_intent(embedded, intent):
    rng = random.Random(7)
    task = next((t for t in (propose(embedded.snapshot, rng, intent) for _ in range(300)) if t is not None), None)
    assert task is not None
    assert task.provenance["intent"] == intent
    assert embedded.verifier.gold(task).errors == []


def test_propose_rejects_unknown_intent(embedded):
    with pytest.raises(ValueError, match="unknown intent"):
        propose(embedded.snapshot, random.Random(0), "fly_to_the_moon")


# ---------------------------------------------------------------- generator


def test_generator_is_deterministic_and_scales():
    a, b = generate_db(seed=3, scale=0.1), generate_db(seed=3, scale=0.1)
    assert a == b
    assert generate_db(seed=4, scale=0.1) != a
    big = generate_db(seed=3, scale=0.3)
    assert (len(a["users"]), len(a["reservations"]), len(a["flights"])) == (50, 200, 30)
    assert (len(big["users"]), len(big["reservations"]), len(big["flights"])) == (150, 600, 90)
    snapshot = build_snapshot(big, Path("generated"))
    for res in snapshot.tables["reservations"].values():
        assert res["reservation_id"] in snapshot.tables["users"][res["user_id"]]["reservations"]
        assert all(f["flight_number"] in snapshot.tables["flights"] for f in res["flights"])


def test_generator_rejects_bad_arguments():
    with pytest.raises(ValueError, match="scale"):
        generate_db(scale=0)
    with pytest.raises(ValueError, match="days"):
        generate_db(days=3)


def test_generator_cli_round_trips(tmp_path):
    out = tmp_path / "db.json"
    assert generate_main(["--seed", "1", "--scale", "0.05", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == generate_db(seed=1, scale=0.05)
    (tmp_path / "tasks.json").write_text("[]")
    (tmp_path / "policy.md").write_text("# Policy\n\nBe helpful.\n")
    domain = load(tmp_path)
    assert domain.snapshot.size()["users"] == 25
    assert domain.semantics.name == "tau2"  # a tau2-layout directory follows tau2


# ---------------------------------------------------------------- tau2 peer data


def test_peer_layout_loads(peer):
    assert peer.snapshot.size() == {"flights": 300, "users": 500, "reservations": 2000}
    assert len(peer.tasks) == 50
    assert len(peer.splits["train"]) == 30 and len(peer.splits["test"]) == 20
    task = peer.task("0")
    assert task.user_id == "emma_kim_9957"
    assert "EHGLP3" in task.instruction
    assert task.nl_assertions == ("Agent should refuse to proceed with the cancellation.",)
    assert task.reward_basis == ("db", "outputs")
    assert peer.task("3").outputs == ("4",)


def test_peer_db_round_trips(peer):
    raw = json.loads((PEER_AIRLINE / "db.json").read_text())
    dumped = peer.snapshot.to_json()
    for table in ("flights", "users"):
        assert dumped[table] == raw[table]
    # tau2 leaves the optional reservation status out of its file; everything else is identical
    assert {k: {f: v for f, v in r.items() if f != "status"} for k, r in dumped["reservations"].items()} == raw[
        "reservations"
    ]


def test_peer_oracle_scores_every_task(peer):
    for task in peer.task_list():
        assert peer.verifier.gold(task).errors == [], task.id
        assert run(peer, OracleAgent(), task.id) == 1.0, task.id


def test_peer_noop_pass_count(peer):
    passed = sum(run(peer, NoopAgent(), t.id) == 1.0 for t in peer.task_list())
    assert passed == 23  # tau2's own figure for its airline do-nothing agent


def test_peer_gold_outcomes_match_tau2(peer):
    """Explicit expectations of what tau2's tools return for some gold calls."""
    outcome = {t.id: peer.verifier.gold(t) for t in peer.task_list()}
    # task 8: a booking gets the first new id, the fixed clock, and spends the whole certificate
    booked = json.loads(outcome["8"].results[-1][1])
    assert booked["reservation_id"] == "HATHAT"
    assert booked["created_at"] == "2024-05-15T15:00:00"
    assert booked["payment_history"] == [{"payment_id": "certificate_8045380", "amount": 348}]
    user = outcome["8"].changes["users"]["sophia_silva_7557"]
    assert "certificate_8045380" not in user["payment_methods"]
    # task 12: calculate formats like tau2 (a float rounded to two decimals, as text)
    calc = [r for a, r in zip(peer.task("12").actions, outcome["12"].results, strict=True) if a.name == "calculate"]
    assert calc == [(True, "1200.0")]
    # task 7: cancelling appends a negated copy of every payment and marks the reservation cancelled
    cancelled = outcome["7"].changes["reservations"]["59XX6W"]
    assert cancelled["status"] == "cancelled"
    history = cancelled["payment_history"]
    half = len(history) // 2
    assert [p["amount"] for p in history[half:]] == [-p["amount"] for p in history[:half]]
    # tau2 gives no seats back on a cancellation (no flight row changes)
    assert "flights" not in outcome["7"].changes
    # task 13: the transfer tool answers as tau2's does
    assert outcome["13"].results == ((True, "Transfer successful"),)
    # every gold call succeeds in tau2, and so here
    assert all(ok for o in outcome.values() for ok, _ in o.results)


# ---------------------------------------------------------------- tau-bench v1 layout


def test_v1_layout_loads_and_replays(tmp_path, peer):
    raw = json.loads((PEER_AIRLINE / "db.json").read_text())
    user_id = "sophia_silva_7557"
    reservations = {k: v for k, v in raw["reservations"].items() if v["user_id"] == user_id}
    v1_user = {k: v for k, v in raw["users"][user_id].items() if k != "user_id"}  # as v1 publishes users
    (tmp_path / "users.json").write_text(json.dumps({user_id: v1_user}))
    (tmp_path / "reservations.json").write_text(json.dumps(reservations))
    (tmp_path / "flights.json").write_text(json.dumps({k: raw["flights"][k] for k in ("HAT271",)}))
    task8 = peer.task("8")
    v1_tasks = [
        {
            "user_id": user_id,
            "instruction": "Book ORD to PHL.",
            "actions": [{"name": a.name, "kwargs": a.arguments} for a in task8.actions if a.name == "book_reservation"],
            "outputs": [],
        }
    ]
    (tmp_path / "tasks.json").write_text(json.dumps(v1_tasks))
    (tmp_path / "wiki.md").write_text("# Airline policy\n")
    domain = load(tmp_path)
    assert domain.semantics.name == "tau-bench"
    # v1 keeps rows exactly as read: its users.json rows have no user_id, and none is added
    assert domain.snapshot.tables["users"][user_id] == v1_user
    assert domain.snapshot.size() == {"flights": 1, "users": 1, "reservations": len(reservations)}
    task = domain.task_list()[0]
    assert task.id == "test_0" and task.actions[0].arguments["flights"] == [
        {"flight_number": "HAT271", "date": "2024-05-26"}
    ]
    assert domain.verifier.gold(task).errors == []
    assert run(domain, OracleAgent(), task.id) == 1.0
    assert run(domain, NoopAgent(), task.id) == 0.0


# ---------------------------------------------------------------- bad input


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    with pytest.raises(DataFileError, match="no airline data"):
        load(tmp_path)
    (tmp_path / "db.json").write_text('{"flights": {}, "users": {}')
    with pytest.raises(DataFileError, match=r"db\.json:1"):
        load(tmp_path)
    (tmp_path / "db.json").write_text(json.dumps({"flights": {}, "users": {"u": {"user_id": "u"}}, "reservations": {}}))
    with pytest.raises(DataFileError, match=r"db\.json: users row 'u': name: Field required"):
        load(tmp_path)
    (tmp_path / "db.json").write_text(json.dumps({"flights": {}, "users": {}, "reservations": {}}))
    with pytest.raises(DataFileError, match=r"policy\.md: policy file not found"):
        load(tmp_path)
    (tmp_path / "policy.md").write_text("")
    with pytest.raises(DataFileError, match=r"policy\.md: the policy is empty"):
        load(tmp_path)
    (tmp_path / "policy.md").write_text("# Policy\n")
    assert load(tmp_path).tasks == {}  # a tau2 directory may hold no tasks.json
    (tmp_path / "tasks.json").write_text('[{"nothing": 1}]')
    with pytest.raises(DataFileError, match=r"tasks\.json: task #0"):
        load(tmp_path)


# ---------------------------------------------------------------- Gymnasium


def test_gymnasium_check_env():
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env

    import apigen_envs  # noqa: F401  (registers the ids)

    env = gym.make("apigen/Airline-v0").unwrapped
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert obs[0]["role"] == "user" and len(info["tools"]) == 15
