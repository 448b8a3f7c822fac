"""Dataset export: ShareGPT / APIGen-MT-5k, OpenAI messages, HF parquet; validation and replay round trips."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

import pytest

from apigen_envs.baselines.tool_calling import ToolCallingAgent
from apigen_envs.collect import Collector
from apigen_envs.episode import Episode
from apigen_envs.export import (
    ExportError,
    OpenAIRecord,
    ShareGPTRecord,
    build_records,
    export_openai,
    export_sharegpt,
    load_openai,
    load_sharegpt,
    record_to_episode,
    replay_fingerprint,
    to_openai,
    to_sharegpt,
    validate_openai,
    validate_sharegpt,
)
from apigen_envs.llm import ScriptedLLM
from apigen_envs.messages import AssistantMessage, UserMessage

TASK = "transfer_50"


def _fn(name: str, **arguments: Any) -> dict[str, Any]:
    return {"id": f"c_{name}", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def agent_llm(amount: float) -> ScriptedLLM:
    """Talks and makes two parallel look-ups in one turn, then transfers ``amount``, then reports."""

    def reply(messages: Sequence[dict[str, Any]], tools: Any) -> Any:
        results = sum(1 for m in messages if m["role"] == "tool")
        if results == 0:
            return {
                "content": "Let me look you up.",
                "tool_calls": [
                    _fn("find_customer_by_email", email="ana@example.com"),
                    _fn("get_account_details", account_id="acc_1001"),
                ],
            }
        if results == 2:
            return {
                "content": None,
                "tool_calls": [
                    _fn("transfer_funds", from_account_id="acc_1001", to_account_id="acc_1002", amount=amount)
                ],
            }
        return f"Done, ${amount} moved."

    return ScriptedLLM(reply)


@pytest.fixture(scope="module")
def domain():
    from apigen_envs import load_domain

    return load_domain("mock")


@pytest.fixture(scope="module")
def episodes(domain) -> list[Episode]:
    out = []
    for amount in (50, 60):
        agent = ToolCallingAgent(agent_llm(amount), name=f"agent{amount}")
        out += Collector(domain, agent, trials=1).run([domain.task(TASK)])
    good, bad = out
    assert good.passed and not bad.passed
    return out


@pytest.fixture
def good(episodes) -> Episode:
    return episodes[0]


# ---------------------------------------------------------------------------------------------- ShareGPT
def test_sharegpt_record_shape(good):
    record = to_sharegpt(good).dump()
    assert set(record) == {"conversations", "tools", "system"}
    roles = [t["from"] for t in record["conversations"]]
    assert roles == ["human", "gpt", "function_call", "observation", "function_call", "observation", "gpt", "human"]
    assert record["system"] == good.system_prompt
    tools = json.loads(record["tools"])
    assert {"name", "description", "parameters"} <= set(tools[0]) and "type" not in tools[0]
    parallel = json.loads(record["conversations"][2]["value"])
    assert [c["name"] for c in parallel] == ["find_customer_by_email", "get_account_details"]
    assert parallel[0]["arguments"] == {"email": "ana@example.com"}
    assert json.loads(record["conversations"][3]["value"])[0] == "cus_ana"
    single = json.loads(record["conversations"][4]["value"])
    assert single == {
        "name": "transfer_funds",
        "arguments": {"from_account_id": "acc_1001", "to_account_id": "acc_1002", "amount": 50},
    }


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_sharegpt_round_trip_replays_to_the_recorded_state(tmp_path, domain, episodes, good, suffix):
    summary = export_sharegpt(episodes, tmp_path / f"data{suffix}")
    assert summary.written == 1 and summary.skipped == {"not_passed": 1}
    if suffix == ".json":
        assert isinstance(json.loads(summary.path.read_text()), list)
    [record] = load_sharegpt(summary.path)
    messages = record.to_messages()
    assert replay_fingerprint(domain, TASK, messages) == good.reward_info.fingerprint
    # The parallel turn comes back as one assistant message with its text and both calls.
    assert messages[1].content == "Let me look you up." and len(messages[1].tool_calls) == 2
    assert [m.role for m in messages] == [m.role for m in good.messages]


def test_replay_detects_a_different_final_state(domain, episodes, good):
    bad = episodes[1]
    messages = to_sharegpt(bad).to_messages()
    assert replay_fingerprint(domain, TASK, messages) == bad.reward_info.fingerprint
    assert bad.reward_info.fingerprint != good.reward_info.fingerprint


# ---------------------------------------------------------------------------------------------- OpenAI
def test_openai_record_shape_and_round_trip(tmp_path, domain, episodes, good):
    record = to_openai(good).dump()
    roles = [m["role"] for m in record["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "tool", "assistant", "tool", "assistant", "user"]
    call = record["messages"][2]["tool_calls"][0]
    assert call["type"] == "function" and isinstance(call["function"]["arguments"], str)
    assert record["tools"][0]["type"] == "function"
    summary = export_openai(episodes, tmp_path / "sft.jsonl", include_meta=True)
    [loaded] = load_openai(summary.path)
    assert loaded.system == good.system_prompt
    assert replay_fingerprint(domain, TASK, loaded.to_messages()) == good.reward_info.fingerprint
    rebuilt = record_to_episode(loaded)
    assert rebuilt.task_id == TASK and rebuilt.episode_id == good.episode_id and rebuilt.agent == "agent50"
    no_system = to_openai(good, include_system=False).dump()
    assert no_system["messages"][0]["role"] == "user"


def test_export_all_keeps_failed_episodes(tmp_path, episodes):
    rows, skipped = build_records(episodes, "openai", only_passed=False)
    assert len(rows) == 2 and skipped == {}
    with pytest.raises(ExportError, match="unknown export format"):
        build_records(episodes, "yaml")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- HF
@pytest.mark.parametrize("fmt", ["sharegpt", "openai"])
def test_hf_parquet_round_trip(tmp_path, domain, episodes, good, fmt):
    pytest.importorskip("datasets")
    from apigen_envs.export import export_hf, load_hf

    dataset = export_hf(episodes, tmp_path / "train.parquet", fmt, include_meta=True)
    assert len(dataset) == 1 and (tmp_path / "train.parquet").stat().st_size > 0
    [record] = load_hf(tmp_path / "train.parquet")
    assert isinstance(record, ShareGPTRecord if fmt == "sharegpt" else OpenAIRecord)
    assert replay_fingerprint(domain, TASK, record.to_messages()) == good.reward_info.fingerprint
    assert record_to_episode(record).task_id == TASK


def test_hf_export_with_nothing_to_write(tmp_path, episodes):
    pytest.importorskip("datasets")
    from apigen_envs.export import export_hf

    with pytest.raises(ExportError, match="no episodes"):
        export_hf(episodes[1:], tmp_path / "x.parquet")


# ---------------------------------------------------------------------------------------------- validation
TOOLS = json.dumps([{"name": "lookup", "description": "d", "parameters": {"type": "object", "properties": {}}}])
CALL = json.dumps({"name": "lookup", "arguments": {}})


def sg(*turns: tuple[str, str], tools: str = TOOLS) -> dict[str, Any]:
    return {"conversations": [{"from": f, "value": v} for f, v in turns], "tools": tools, "system": "s"}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (sg(("gpt", "hi")), "open with a 'human' turn"),
        (sg(("human", "hi"), ("observation", "x")), "observation without a function_call"),
        (sg(("human", "hi"), ("function_call", CALL)), "has no observation"),
        (sg(("human", "hi"), ("function_call", CALL), ("gpt", "x")), "has no observation"),
        (sg(("human", "hi"), ("function_call", "not json"), ("observation", "x")), "not valid JSON"),
        (sg(("human", "hi"), ("function_call", '{"name": "other"}'), ("observation", "x")), "not among"),
        (
            sg(("human", "hi"), ("function_call", json.dumps([json.loads(CALL)] * 2)), ("observation", "x")),
            "JSON list of 2 results",
        ),
        (sg(("human", "hi"), tools="{bad"), "JSON string"),
        (sg(("human", "hi"), tools='[{"description": "no name"}]'), "non-empty 'name'"),
        (sg(("robot", "hi")), "conversations.0.from"),
        ({"conversations": [], "tools": TOOLS}, "conversations"),
    ],
)
def test_sharegpt_validation_errors(row, message):
    with pytest.raises(ExportError, match="not a valid ShareGPT record") as info:
        validate_sharegpt(row, "rec")
    assert message in str(info.value)


def oa(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"messages": list(messages), "tools": [{"type": "function", "function": json.loads(TOOLS)[0]}]}


USER = {"role": "user", "content": "hi"}
ASK = {"role": "assistant", "content": "", "tool_calls": [_fn("lookup")]}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (oa(USER, ASK), "have no result"),
        (oa(USER, ASK, USER), "have no result"),
        (oa(USER, ASK, {"role": "tool", "tool_call_id": "nope", "content": "x"}), "unknown or answered call"),
        (oa(USER, {"role": "assistant", "content": "", "tool_calls": [_fn("other")]}), "not a listed tool"),
        (
            oa(
                USER,
                {"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "lookup", "arguments": "["}}]},
            ),
            "JSON object string",
        ),
        (oa({"role": "user", "content": "x", "tool_calls": [_fn("lookup")]}), "text content and nothing else"),
        (oa(USER, {"role": "assistant", "content": " "}), "content or tool_calls"),
        (oa(USER), "at least one user and one assistant"),
        (oa(USER, {"role": "assistant", "content": "ok"}, {"role": "system", "content": "s"}), "must come first"),
    ],
)
def test_openai_validation_errors(row, message):
    with pytest.raises(ExportError, match="not a valid OpenAI record") as info:
        validate_openai(row, "rec")
    assert message in str(info.value)


def test_writer_refuses_an_episode_that_cannot_form_a_record(tmp_path):
    episode = Episode(
        episode_id="mock/x/0",
        domain="mock",
        task_id="x",
        termination="user_stop",
        reward=1.0,
        messages=[AssistantMessage(content="Hello?")],
    )
    with pytest.raises(ExportError, match=r"episode mock/x/0: .*human"):
        export_sharegpt([episode], tmp_path / "x.jsonl")
    with pytest.raises(ExportError, match=r"episode mock/x/0: .*user"):
        export_openai([episode], tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


def test_loader_names_the_bad_record(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(sg(("human", "hi"))) + "\n" + json.dumps(sg(("gpt", "x"))) + "\n")
    with pytest.raises(ExportError, match=r"d.jsonl: record #1"):
        load_sharegpt(path)


def test_record_to_episode_without_meta():
    record = validate_sharegpt(sg(("human", "hi"), ("function_call", CALL), ("observation", "ok"), ("gpt", "done")))
    episode = record_to_episode(record, domain="mock", task_id="t")
    assert episode.episode_id == "mock/t/0" and isinstance(episode.messages[0], UserMessage)
    assert episode.messages[1].tool_calls[0].name == "lookup" and episode.messages[2].content == "ok"


# ---------------------------------------------------------------------------------------------- CLI
def test_export_cli(tmp_path, episodes, capsys):
    from apigen_envs.datagen.phase2_cli import add_export_parser
    from apigen_envs.episodes_io import EpisodeWriter

    src = tmp_path / "eps.jsonl"
    with EpisodeWriter(src) as writer:
        for episode in episodes:
            writer.write(episode)
    parser = argparse.ArgumentParser()
    add_export_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["export", str(src), "--format", "openai", "--out", str(tmp_path / "o.jsonl"), "--all"])
    assert args.func(args) == 0
    assert len(load_openai(tmp_path / "o.jsonl")) == 2
    assert "wrote 2 records" in capsys.readouterr().out


def _episode_with_tool_results(*results: tuple[str, bool]) -> Episode:
    from apigen_envs.messages import ToolCall, ToolMessage

    calls = tuple(ToolCall(id=f"c{i}", name="get_account_details", arguments={"account_id": "x"}) for i in range(2))
    messages = [
        UserMessage(content="hi"),
        AssistantMessage(content="Looking.", tool_calls=calls),
        *(
            ToolMessage(tool_call_id=f"c{i}", name="get_account_details", content=text, error=error)
            for i, (text, error) in enumerate(results)
        ),
        AssistantMessage(content="Done."),
    ]
    tools = list(load_domain_tools())
    return Episode(
        episode_id="mock/x/0", domain="mock", task_id="x", termination="user_stop", messages=messages, tools=tools
    )


def load_domain_tools() -> tuple[dict[str, Any], ...]:
    from apigen_envs.registry import load_domain

    return load_domain("mock").tools.schemas()


@pytest.mark.parametrize("fmt", ["sharegpt", "openai"])
def test_tool_errors_are_a_field_not_guessed_from_the_text(tmp_path, fmt):
    # An error whose text does not say so, and a success whose text starts with "Error:".
    episode = _episode_with_tool_results(("account acc_x not found", True), ("Error: none (a literal log line)", False))
    (row,), _ = build_records([episode], fmt, only_passed=False)
    assert row["tool_errors"] == [0]
    record = validate_sharegpt(row) if fmt == "sharegpt" else validate_openai(row)
    assert [m.error for m in record.to_messages() if m.role == "tool"] == [True, False]
    clean = _episode_with_tool_results(("ok", False), ("ok", False))
    (row,), _ = build_records([clean], fmt, only_passed=False)
    assert "tool_errors" not in row  # records without errors look exactly like the public formats


def test_openai_export_uses_the_messages_own_wire_format():
    episode = _episode_with_tool_results(("a", False), ("b", True))
    record = to_openai(episode, include_system=False)
    assert [m.model_dump(exclude_none=True) for m in record.messages] == [m.to_openai() for m in episode.messages]
