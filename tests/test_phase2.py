"""APIGen-MT phase 2 (trajectories) and best-of-N user stabilisation, with scripted models only."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from apigen_envs.baselines.tool_calling import ToolCallingAgent
from apigen_envs.datagen.best_of_n import (
    BestOfNUser,
    LLMCritic,
    RuleCritic,
    candidate_seed,
    facts_in,
    parse_verdict,
)
from apigen_envs.datagen.phase2 import (
    Phase2Config,
    Phase2Paths,
    load_blueprints,
    run_phase2,
    trajectory_counts,
)
from apigen_envs.episodes_io import load_episodes
from apigen_envs.errors import DataFileError, LLMError
from apigen_envs.llm import ScriptedLLM
from apigen_envs.messages import AssistantMessage, ToolCall, Usage, UserMessage
from apigen_envs.protocols import UserTurn
from apigen_envs.simulators.scripted_user import ScriptedUser

TASK = "transfer_50"


def _call(name: str, **arguments: Any) -> dict[str, Any]:
    return {
        "content": None,
        "tool_calls": [{"id": f"c_{name}", "type": "function", "function": {"name": name, "arguments": arguments}}],
    }


def solver(amounts: Sequence[float] = (50,), skip_lookup: Sequence[bool] = (False,)) -> ScriptedLLM:
    """A scripted agent for the mock ``transfer_50`` task; episode k uses amounts[k] and skip_lookup[k]."""
    episode = {"n": -1}

    def reply(messages: Sequence[dict[str, Any]], tools: Any) -> Any:
        tool_results = sum(1 for m in messages if m["role"] == "tool")
        if tool_results == 0 and sum(1 for m in messages if m["role"] == "user") == 1:
            episode["n"] += 1
        k = episode["n"]
        amount, skip = amounts[min(k, len(amounts) - 1)], skip_lookup[min(k, len(skip_lookup) - 1)]
        steps = ["transfer"] if skip else ["find", "transfer"]
        if tool_results < len(steps):
            if steps[tool_results] == "find":
                return _call("find_customer_by_email", email="ana@example.com")
            return _call("transfer_funds", from_account_id="acc_1001", to_account_id="acc_1002", amount=amount)
        return f"Done: I moved ${amount} to your savings account."

    return ScriptedLLM(reply)


def run(tmp_path, llm: ScriptedLLM, *, tasks: Sequence[str] = (TASK,), user: Any = None, **config: Any):
    from apigen_envs import load_domain

    domain = load_domain("mock")
    agent = ToolCallingAgent(llm)
    cfg = Phase2Config(concurrency=1, **config)
    return run_phase2(
        domain,
        [domain.task(t) for t in tasks],
        agent,
        user or ScriptedUser(),
        tmp_path / "traj.jsonl",
        config=cfg,
        agent_config={"model": "scripted"},
    )


# ---------------------------------------------------------------------------------------------- phase 2
def test_accept_keeps_one_distinct_success_and_writes_stats(tmp_path):
    result = run(tmp_path, solver())
    stats = json.loads(result.paths.stats.read_text())
    assert stats["attempts"] == 3 and stats["successes"] == 3
    assert stats["kept"] == 1 and stats["duplicates_dropped"] == 2
    assert stats["trajectory_success_rate"] == 1.0 and stats["blueprint_success_rate"] == 1.0
    # user opens, agent calls twice, agent reports, user thanks and stops.
    assert stats["avg_tool_calls"] == 2 and stats["avg_user_turns"] == 2 and stats["avg_turns"] == 5
    assert stats["per_blueprint"][TASK]["acceptance"] == 1.0
    kept = load_episodes([result.paths.trajectories])
    assert [e.trial for e in kept] == [0] and kept[0].passed
    assert len(load_episodes([result.paths.attempts])) == 3


def test_reject_wrong_action_keeps_nothing(tmp_path):
    result = run(tmp_path, solver(amounts=(60,)))
    assert result.kept == ()
    assert result.stats["attempts"] == 3 and result.stats["successes"] == 0
    assert result.stats["trajectory_success_rate"] == 0.0
    assert result.stats["avg_turns"] is None
    assert result.paths.trajectories.read_text() == ""


def test_retry_fails_first_trial_passes_second_and_stops_early(tmp_path):
    result = run(tmp_path, solver(amounts=(60, 50)), stop_after=1)
    line = result.stats["per_blueprint"][TASK]
    assert line["attempts"] == 2 and line["successes"] == 1 and line["first_success_trial"] == 1
    assert line["stopped_early"] is True
    assert [e.trial for e in result.kept] == [1]
    assert result.stats["trajectory_success_rate"] == 0.5


def test_keeps_every_distinct_success_only(tmp_path):
    # Trials 0 and 2 take the same path; trial 1 skips the (read-only) lookup: same final state, other calls.
    result = run(tmp_path, solver(skip_lookup=(False, True, False)))
    assert result.stats["successes"] == 3
    assert result.stats["kept"] == 2 and result.stats["duplicates_dropped"] == 1
    assert [e.trial for e in result.kept] == [0, 1]
    assert len({e.reward_info.fingerprint for e in result.kept}) == 1


def test_infra_failure_is_retried_and_not_counted(tmp_path):
    inner = solver()
    state = {"failed": False}

    def flaky(messages: Sequence[dict[str, Any]], tools: Any) -> Any:
        if not state["failed"]:
            state["failed"] = True
            raise LLMError("server down")
        return inner.replies(messages, tools)  # type: ignore[operator]

    result = run(tmp_path, ScriptedLLM(flaky))
    line = result.stats["per_blueprint"][TASK]
    assert line["infra_failures"] == 1 and line["attempts"] == 3 and line["successes"] == 3
    assert result.stats["trajectory_success_rate"] == 1.0
    assert result.stats["infra_failures_by_kind"] == {"agent_error": 1}
    assert len(load_episodes([result.paths.attempts])) == 4


def test_infra_retries_are_bounded(tmp_path):
    result = run(tmp_path, ScriptedLLM([LLMError("down")], cycle=True), max_infra_retries=1)
    line = result.stats["per_blueprint"][TASK]
    assert line["attempts"] == 0 and line["infra_failures"] == 4 and line["infra_exhausted"] is True
    assert result.stats["trajectory_success_rate"] is None


def test_resume_runs_nothing_twice(tmp_path):
    first = run(tmp_path, solver(amounts=(60, 50)), stop_after=1)
    assert first.new_episodes == 2
    again = run(tmp_path, solver(), stop_after=1)
    assert again.new_episodes == 0
    assert [e.episode_id for e in again.kept] == [e.episode_id for e in first.kept]
    # Raising the trial budget resumes where the log stops instead of starting over.
    more = run(tmp_path, solver(), trials=3)
    assert more.new_episodes == 1 and more.stats["per_blueprint"][TASK]["attempts"] == 3


def test_several_blueprints_concurrently(tmp_path):
    def reply(messages: Sequence[dict[str, Any]], tools: Any) -> Any:
        first = next(m["content"] for m in messages if m["role"] == "user")
        done = any(m["role"] == "tool" for m in messages)
        if done:
            return "All set."
        if "Ben" in first:
            return _call("set_account_nickname", account_id="acc_2001", nickname="daily")
        return _call("transfer_funds", from_account_id="acc_1001", to_account_id="acc_1002", amount=50)

    from apigen_envs import load_domain

    domain = load_domain("mock")
    result = run_phase2(
        domain,
        [domain.task(TASK), domain.task("nickname"), domain.task("close_empty")],
        ToolCallingAgent(ScriptedLLM(reply)),
        ScriptedUser(),
        tmp_path / "t.jsonl",
        config=Phase2Config(trials=2, concurrency=8),
    )
    per = result.stats["per_blueprint"]
    assert per[TASK]["kept"] == 1 and per["nickname"]["kept"] == 1 and per["close_empty"]["kept"] == 0
    assert result.stats["blueprints_solved"] == 2 and result.stats["blueprint_success_rate"] == pytest.approx(0.6667)


def test_end_to_end_through_real_openai_client(tmp_path):
    from apigen_envs import load_domain
    from apigen_envs.fake_server import ScriptedServer
    from apigen_envs.llm import LLMConfig, OpenAIClient

    def handler(body: dict[str, Any]) -> Any:
        tool_results = sum(1 for m in body["messages"] if m["role"] == "tool")
        if tool_results == 0:
            return {
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "transfer_funds",
                            "arguments": json.dumps(
                                {"from_account_id": "acc_1001", "to_account_id": "acc_1002", "amount": 50}
                            ),
                        },
                    }
                ],
            }
        return "Your transfer of $50 is complete."

    domain = load_domain("mock")
    with ScriptedServer(handler=handler) as server:
        client = OpenAIClient(LLMConfig(model="scripted", base_url=server.base_url, max_retries=0))
        result = run_phase2(
            domain,
            [domain.task(TASK)],
            ToolCallingAgent(client),
            ScriptedUser(),
            tmp_path / "t.jsonl",
            config=Phase2Config(trials=2),
            agent_config={"model": "scripted"},
        )
        assert server.request_count == 4
    assert result.stats["successes"] == 2 and result.stats["kept"] == 1
    assert result.kept[0].agent_usage.total_tokens > 0


def test_config_and_paths_validate():
    with pytest.raises(ValueError, match="trials"):
        Phase2Config(trials=0)
    with pytest.raises(ValueError, match="stop_after"):
        Phase2Config(stop_after=0)
    paths = Phase2Paths.for_output("out/run.jsonl")
    assert paths.attempts.name == "run.attempts.jsonl" and paths.stats.name == "run.stats.json"


def test_trajectory_counts():
    from apigen_envs.episode import Episode
    from apigen_envs.messages import ToolMessage

    msgs = [
        UserMessage(content="hi"),
        AssistantMessage(tool_calls=(ToolCall(id="a", name="x"), ToolCall(id="b", name="y"))),
        ToolMessage(tool_call_id="a", name="x", content="1"),
        ToolMessage(tool_call_id="b", name="y", content="2"),
        AssistantMessage(content="done"),
    ]
    ep = Episode(episode_id="d/t/0", domain="d", task_id="t", termination="user_stop", messages=msgs)
    assert trajectory_counts(ep) == {"turns": 3, "tool_calls": 2, "user_turns": 1, "agent_steps": 2}


# ---------------------------------------------------------------------------------------------- blueprints
def test_load_blueprints_accepts_several_layouts(tmp_path):
    task = {"id": "a", "scenario": {"instruction": "do a"}, "actions": [{"name": "x", "arguments": {}}]}
    (tmp_path / "list.json").write_text(json.dumps([task]))
    (tmp_path / "wrapped.json").write_text(json.dumps({"blueprints": [{"task": task, "review": {"score": 1}}]}))
    (tmp_path / "lines.jsonl").write_text(json.dumps(task) + "\n\n")
    v1 = {"user_id": "u", "instruction": "do b", "actions": [{"name": "x", "kwargs": {"k": 1}}], "outputs": []}
    (tmp_path / "v1.json").write_text(json.dumps([v1]))
    for name in ("list.json", "wrapped.json", "lines.jsonl"):
        [bp] = load_blueprints(tmp_path / name, "mock")
        assert bp.id == "a" and bp.domain == "mock" and bp.actions[0].name == "x"
    [bp] = load_blueprints(tmp_path / "v1.json", "mock")
    assert bp.id == "bp_00000" and bp.instruction == "do b" and bp.actions[0].arguments == {"k": 1}


def test_load_blueprints_errors_name_the_item(tmp_path):
    task = {"id": "a", "scenario": {"instruction": "x"}}
    (tmp_path / "dup.json").write_text(json.dumps([task, task]))
    with pytest.raises(DataFileError, match=r"blueprint #1: duplicate id 'a'"):
        load_blueprints(tmp_path / "dup.json", "mock")
    (tmp_path / "bad.json").write_text(json.dumps([task, {"id": "b"}]))
    with pytest.raises(DataFileError, match=r"bad.json: blueprint #1"):
        load_blueprints(tmp_path / "bad.json", "mock")
    (tmp_path / "obj.json").write_text(json.dumps({"x": 1}))
    with pytest.raises(DataFileError, match="expected a list"):
        load_blueprints(tmp_path / "obj.json", "mock")
    with pytest.raises(DataFileError, match="not found"):
        load_blueprints(tmp_path / "missing.json", "mock")


def test_blueprints_from_file_run_in_the_domain(tmp_path):
    custom = {
        "id": "custom_transfer",
        "scenario": {"instruction": "You are Ana Silva (ana@example.com). Move $50 from acc_1001 to acc_1002."},
        "actions": [
            {
                "name": "transfer_funds",
                "arguments": {"from_account_id": "acc_1001", "to_account_id": "acc_1002", "amount": 50},
            }
        ],
    }
    (tmp_path / "bp.json").write_text(json.dumps([custom]))
    from apigen_envs import load_domain

    blueprints = load_blueprints(tmp_path / "bp.json", "mock")
    result = run_phase2(
        load_domain("mock"),
        blueprints,
        ToolCallingAgent(solver(skip_lookup=(True,))),
        ScriptedUser(),
        tmp_path / "t.jsonl",
        config=Phase2Config(trials=1),
    )
    assert result.stats["kept"] == 1 and result.kept[0].task_id == "custom_transfer"


# ---------------------------------------------------------------------------------------------- best of N
class SeededUser:
    """A base user whose turn depends only on the seed (for best-of-N tests)."""

    name = "seeded"

    def __init__(self, lines: dict[int | None, str | UserTurn]) -> None:
        self.lines = lines
        self.seeds: list[int | None] = []

    def respond(self, task: Any, conversation: Any, *, seed: int | None = None) -> UserTurn:
        self.seeds.append(seed)
        line = self.lines.get(seed, "Hello.")
        turn = line if isinstance(line, UserTurn) else UserTurn(line)
        return UserTurn(turn.content, turn.stop, Usage(prompt_tokens=10, completion_tokens=1))

    async def arespond(self, task: Any, conversation: Any, *, seed: int | None = None) -> UserTurn:
        return self.respond(task, conversation, seed=seed)


def seeds(base: int, n: int = 4) -> list[int | None]:
    return [candidate_seed(base, i) for i in range(n)]


def critic_llm(score_of: Callable[[str], str]) -> ScriptedLLM:
    """A scripted critic whose reply depends on the candidate line in the request."""

    def reply(messages: Sequence[dict[str, Any]], tools: Any) -> str:
        body = messages[-1]["content"]
        line = body.split("# Proposed next customer message\n", 1)[1]
        return score_of(line)

    return ScriptedLLM(reply)


@pytest.fixture
def task():
    from apigen_envs import load_domain

    return load_domain("mock").task(TASK)


def test_best_of_n_picks_the_highest_score(task):
    s = seeds(5)
    base = SeededUser({s[0]: "meh", s[1]: "good", s[2]: "best", s[3]: "good too"})
    scores = {"meh": 3, "good": 7, "best": 9, "good too": 7}
    critic = critic_llm(lambda line: json.dumps({"consistent": True, "score": scores[line.strip()], "reason": "r"}))
    user = BestOfNUser(base, critic, n=4)
    turn = user.respond(task, (), seed=5)
    assert turn.content == "best"
    assert base.seeds == s and len(set(s)) == 4
    assert critic.calls == 4 and all(r.response_format == {"type": "json_object"} for r in critic.requests)
    critic_usage = [c.verdict.usage for c in user.history[-1].candidates]
    assert all(u is not None and u.total_tokens > 0 for u in critic_usage)
    expected = Usage(prompt_tokens=40, completion_tokens=4)
    for u in critic_usage:
        expected = expected + u
    assert turn.usage == expected
    assert user.history[-1].chosen == 2


def test_best_of_n_rejects_an_inconsistent_turn_even_if_it_scores_high(task):
    s = seeds(1)
    base = SeededUser({s[0]: "My order is #W999.", s[1]: "I need a transfer.", s[2]: "Hi", s[3]: "Hi"})

    def verdict(line: str) -> str:
        if "#W999" in line:
            return '{"consistent": false, "score": 10, "reason": "invented order id"}'
        return '{"consistent": true, "score": 6, "reason": "fine"}'

    user = BestOfNUser(base, critic_llm(verdict), n=4)
    assert user.respond(task, (), seed=1).content == "I need a transfer."


def test_best_of_n_resamples_when_all_are_rejected_then_falls_back(task):
    base = SeededUser({})  # every candidate says "Hello."
    critic = critic_llm(lambda line: '{"consistent": false, "score": 4, "reason": "no"}')
    user = BestOfNUser(base, critic, n=3, max_rounds=2)
    turn = user.respond(task, (), seed=0)
    choice = user.history[-1]
    assert turn.content == "Hello." and choice.all_rejected and choice.rounds == 2
    assert len(base.seeds) == 6 and len(set(base.seeds)) == 6
    assert critic.calls == 2  # identical candidates are judged once per set


def test_best_of_n_malformed_critic_output_scores_zero_with_a_record(task):
    s = seeds(3, 2)
    base = SeededUser({s[0]: "first", s[1]: "second"})
    critic = critic_llm(lambda line: "I like it!" if "first" in line else '{"consistent": true, "score": 2}')
    user = BestOfNUser(base, critic, n=2)
    assert user.respond(task, (), seed=3).content == "second"
    choice = user.history[-1]
    assert choice.malformed == 1
    bad = choice.candidates[0].verdict
    assert bad.score == 0 and bad.malformed and bad.raw == "I like it!" and "malformed" in bad.reason
    assert choice.to_dict()["candidates"][0]["malformed"] is True


def test_best_of_n_ties_go_to_the_lowest_index_and_async_agrees(task):
    s = seeds(9)
    base = SeededUser({s[0]: "a", s[1]: "b", s[2]: "c", s[3]: "d"})
    critic = critic_llm(lambda line: '{"consistent": true, "score": 5}' if "a" in line else '{"score": 8}')
    user = BestOfNUser(base, critic, n=4)
    assert user.respond(task, (), seed=9).content == "b"
    assert asyncio.run(user.arespond(task, (), seed=9)).content == "b"
    seen: list[Any] = []
    user.on_choice = seen.append
    user.respond(task, (), seed=9)
    assert seen and seen[0].chosen == 1


def test_best_of_n_rejects_bad_arguments():
    with pytest.raises(ValueError):
        BestOfNUser(ScriptedUser(), RuleCritic(), n=0)
    with pytest.raises(ValueError, match="critic"):
        BestOfNUser(ScriptedUser(), object(), n=2)  # type: ignore[arg-type]
    assert isinstance(BestOfNUser(ScriptedUser(), ScriptedLLM(["{}"])).critic, LLMCritic)


def test_parse_verdict_variants():
    assert parse_verdict('Sure. {"consistent": true, "score": 7, "reason": "ok"}').score == 7
    assert parse_verdict("Score: 6/10, consistent").score == 6
    assert parse_verdict("score: 3 - inconsistent with the task").consistent is False
    assert parse_verdict('{"consistent": "no", "score": "4"}').consistent is False
    for bad in ('{"score": 11}', '{"score": "high"}', '{"consistent": "maybe", "score": 5}', "", None):
        verdict = parse_verdict(bad)
        assert verdict.malformed and verdict.score == 0


def test_rule_critic_checks_facts_stops_and_disclosure(task):
    critic = RuleCritic()
    ok = critic.judge(task, (), UserTurn("I want to move $50.00 from acc_1001."))
    assert ok.consistent and ok.score == 10
    invented = critic.judge(task, (), UserTurn("Please move $75 from acc_1001."))
    assert not invented.consistent and "75" in invented.reason
    said = (UserMessage(content="hi"), AssistantMessage(content="Which account?"))
    early = critic.judge(task, said, UserTurn("Bye", stop="stop"))
    assert early.score == 4 and "before the agent has acted" in early.reason
    dump = critic.judge(task, (), UserTurn("I am ana@example.com, move 50 from acc_1001 to acc_1002"))
    assert dump.consistent and dump.score < 10 and "new details" in dump.reason
    assert facts_in("Order #W123, total $1,200.00 on 2024-05-01") >= {"w123", "1200", "2024-05-01"}


def test_best_of_n_user_inside_phase_2(tmp_path):
    user = BestOfNUser(ScriptedUser(), RuleCritic(), n=4)
    result = run(tmp_path, solver(), user=user, trials=1)
    assert result.stats["kept"] == 1
    assert user.history and all(len(c.candidates) == 4 for c in user.history)


def test_trajectories_cli_with_best_of_n_rules(tmp_path, capsys):
    import argparse

    from apigen_envs.datagen.phase2_cli import add_trajectories_parser

    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir")
    add_trajectories_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "t.jsonl"
    argv = ["trajectories", "--domain", "mock", "--agent", "oracle", "--user", "scripted", "--out", str(out)]
    args = parser.parse_args([*argv, "--best-of-n", "2", "--critic", "rules", "--trials", "2", "--quiet"])
    assert args.func(args) == 0
    stats = json.loads(out.with_name("t.stats.json").read_text())
    assert stats["blueprints"] == 5 and stats["kept"] == 5 and stats["attempts"] == 10
    assert "kept 5 trajectories" in capsys.readouterr().out
    bad = parser.parse_args([*argv, "--trials", "0"])
    assert bad.func(bad) == 2
