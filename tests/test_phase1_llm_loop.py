"""The phase-1 LLM loop end to end over HTTP, against the scripted OpenAI-compatible server: feedback carries
every earlier attempt, a skipped committee is recorded as skipped, a committee of several models votes,
attempts run concurrently, schema-constrained output is requested, small-model replies are repaired, and
a dead server is a recorded rejection, not a crash."""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import pytest

from apigen_envs.datagen.cli import main as blueprints_main
from apigen_envs.datagen.committee import CRITERIA, Committee, parse_review
from apigen_envs.datagen.context import ContextSampler
from apigen_envs.datagen.phase1 import Phase1Config, Phase1Pipeline
from apigen_envs.datagen.proposers import LLMProposer, blueprint_schema, parse_payload
from apigen_envs.fake_server import ScriptedServer
from apigen_envs.llm import LLMConfig, OpenAIClient
from apigen_envs.registry import load_domain


@pytest.fixture(scope="module")
def mock():
    return load_domain("mock")


def ana(domain) -> ContextSampler:
    """A sampler whose contexts are all about Ana, the customer the scripted blueprints are written for."""
    return ContextSampler(domain, user_ids=["cus_ana"])


def client(server: ScriptedServer, model: str = "proposer") -> OpenAIClient:
    return OpenAIClient(LLMConfig(model=model, base_url=server.base_url, max_retries=0, timeout_s=30))


def blueprint(nickname: str, account: str = "acc_1001", identify: bool = True, **extra: Any) -> str:
    actions = [{"name": "set_account_nickname", "arguments": {"account_id": account, "nickname": nickname}}]
    if identify:
        actions.insert(0, {"name": "find_customer_by_email", "arguments": {"email": "ana@example.com"}})
    body = {
        "thought": "Ana wants a nickname.",
        "user_id": "cus_ana",
        "instruction": f"You are Ana Silva (ana@example.com). Name your account {account} '{nickname}'.",
        "actions": actions,
        "outputs": [],
        **extra,
    }
    return json.dumps(body)


def review(ok: bool) -> str:
    scores = dict.fromkeys(CRITERIA, 1) | ({} if ok else {"completeness": 0})
    return json.dumps({"comment": "fine" if ok else "the instruction is vague", "scores": scores})


def is_review(body: dict[str, Any]) -> bool:
    return "Reviewing a task blueprint" in body["messages"][0]["content"]


def test_feedback_carries_every_earlier_attempt_over_http(mock) -> None:
    replies = iter([blueprint("bills", identify=False), "not json at all", blueprint("bills")])
    with ScriptedServer(handler=lambda body: next(replies)) as server:
        pipeline = Phase1Pipeline(
            mock, sampler=ana(mock), proposer=LLMProposer(client(server), mock.tools, policy=mock.policy)
        )
        result = pipeline.run(Phase1Config(n=1, seed=1, max_retries=3, max_attempts=1))
        requests = server.requests
    assert len(result.tasks) == 1 and result.stats.proposals == 3
    prov = result.tasks[0].provenance
    assert prov["attempts"] == 3 and prov["feedback_rounds"] == 2 and prov["model"] == "proposer"
    assert prov["proposer"] == "llm" and prov["family"] in prov["context"]["family"]
    first, second, third = (r["messages"] for r in requests)
    assert len(first) == 2 and "# Domain policy" in first[0]["content"]  # the full policy, in the system prompt
    assert mock.policy.strip()[:200] in first[0]["content"]
    # Retry 1 sees attempt 1 verbatim and its policy feedback.
    assert second[2] == {"role": "assistant", "content": blueprint("bills", identify=False)}
    assert "mock.identify_first" in second[3]["content"]
    # Retry 2 sees both earlier attempts and both rounds of feedback, in order.
    assert [m["role"] for m in third] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert third[2]["content"] == second[2]["content"] and third[4]["content"] == "not json at all"
    assert "mock.identify_first" in third[3]["content"] and "format" in third[5]["content"]
    assert result.stats.failures == {"policy: [mock.identify_first]": 1, "format: reply holds no JSON object": 1}


def test_no_feedback_mode_sends_fresh_prompts(mock) -> None:
    replies = iter([blueprint("bills", identify=False), blueprint("bills")])
    with ScriptedServer(handler=lambda body: next(replies)) as server:
        pipeline = Phase1Pipeline(mock, sampler=ana(mock), proposer=LLMProposer(client(server), mock.tools))
        result = pipeline.run(Phase1Config(n=1, seed=1, max_retries=1, max_attempts=1, feedback=False))
        requests = server.requests
    assert result.stats.accepted == 1 and [len(r["messages"]) for r in requests] == [2, 2]


def test_skipped_committee_is_recorded_as_skipped(mock) -> None:
    with ScriptedServer([blueprint("bills")]) as server:
        result = Phase1Pipeline(mock, sampler=ana(mock), proposer=LLMProposer(client(server), mock.tools)).run(
            Phase1Config(n=1, seed=0, max_retries=0, max_attempts=1)
        )
    stats = result.stats.to_dict()
    assert result.tasks[0].provenance["committee"] == "skipped"
    assert "committee" not in result.tasks[0].provenance["stages_passed"]
    assert stats["committee"] == "skipped"
    assert stats["stages"]["committee"] == {"reached": 0, "passed": 0, "skipped": 1}


def test_committee_of_three_models_votes_and_sees_schema(mock) -> None:
    verdicts = {"model-a": True, "model-b": True, "model-c": False}

    def handler(body: dict[str, Any]) -> str:
        return review(verdicts[body["model"]]) if is_review(body) else blueprint("bills")

    with ScriptedServer(handler=handler) as server:
        members = [client(server, m) for m in verdicts]
        committee = Committee(members, threshold=1.0, policy=mock.policy, json_mode="llama")
        proposer = LLMProposer(client(server), mock.tools, json_mode="llama")
        result = Phase1Pipeline(mock, sampler=ana(mock), proposer=proposer, committee=committee).run(
            Phase1Config(n=1, seed=0, max_retries=0, max_attempts=1)
        )
        requests = server.requests
    verdict = result.tasks[0].provenance["committee"]
    assert [r["model"] for r in verdict["reviews"]] == ["model-a", "model-b", "model-c"]
    # 2 of 3 say complete: the majority vote passes every criterion.
    assert verdict["votes"] == dict.fromkeys(CRITERIA, 1) and verdict["disagreement"]["completeness"] == pytest.approx(
        1 / 3, abs=1e-3
    )
    assert "model-a" in result.stats.committee and "3 reviewers" in result.stats.committee
    reviews = [r for r in requests if is_review(r)]
    assert sorted(r["model"] for r in reviews) == sorted(verdicts)
    assert reviews[0]["response_format"]["type"] == "json_object" and "scores" in json.dumps(
        reviews[0]["response_format"]
    )
    proposal_request = next(r for r in requests if not is_review(r))
    schema = proposal_request["response_format"]["schema"]
    assert schema == blueprint_schema(mock.tools)
    assert schema["properties"]["actions"]["items"]["properties"]["name"]["enum"] == [
        t.name for t in mock.tools if t.name != "think"
    ]
    typed = blueprint_schema(mock.tools, typed_arguments=True)["properties"]["actions"]["items"]["anyOf"]
    assert {v["properties"]["name"]["const"] for v in typed} == {t.name for t in mock.tools if t.name != "think"}


def test_committee_rejection_is_summarised_with_the_blueprint(mock) -> None:
    def handler(body: dict[str, Any]) -> str:
        system = body["messages"][0]["content"]
        if "Summarising reviews" in system:
            return "- say which account"
        return review(False) if is_review(body) else blueprint("bills")

    with ScriptedServer(handler=handler) as server:
        llm = client(server)
        pipeline = Phase1Pipeline(
            mock,
            LLMProposer(llm, mock.tools),
            committee=Committee(llm, size=1, threshold=1.0),
            summariser=llm,
            sampler=ana(mock),
        )
        result = pipeline.run(Phase1Config(n=1, seed=0, max_retries=1, max_attempts=1))
        requests = server.requests
    assert result.stats.reached["committee"] == 2 and result.stats.accepted == 0
    summary = next(r for r in requests if "Summarising reviews" in r["messages"][0]["content"])
    body = json.loads(summary["messages"][1]["content"])
    assert body["blueprint"]["actions"][1]["name"] == "set_account_nickname" and body["verdict"]["votes"]
    retry = [r for r in requests if "Writing a task blueprint" in r["messages"][0]["content"]][1]
    assert "say which account" in retry["messages"][-1]["content"]


def test_attempts_run_concurrently(mock) -> None:
    in_flight = 0
    peak = 0
    counter = 0

    async def handler(body: dict[str, Any]) -> str:
        nonlocal in_flight, peak, counter
        counter += 1
        name = f"nick{counter}"
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.3)
        in_flight -= 1
        return (
            review(True)
            if is_review(body)
            else blueprint(name, account=random.Random(counter).choice(["acc_1001", "acc_1002"]))
        )

    with ScriptedServer(handler=handler) as server:
        llm = client(server)
        pipeline = Phase1Pipeline(
            mock, sampler=ana(mock), proposer=LLMProposer(llm, mock.tools), committee=Committee(llm, size=2)
        )
        start = time.perf_counter()
        result = pipeline.run(Phase1Config(n=6, seed=0, max_retries=0, max_attempts=6, concurrency=6))
        wall = time.perf_counter() - start
    # 6 proposals and their 2-member reviews, 0.3 s each: sequentially >= 5.4 s.
    assert peak >= 4 and wall < 3.0
    stats = result.stats
    assert stats.attempts == 6 and stats.proposals == 6
    assert stats.accepted + sum(stats.failures.values()) == 6
    assert len(result.tasks) == stats.accepted >= 2
    # Ids follow attempt order and are unique, as in a sequential run.
    assert sorted(t.id for t in result.tasks) == [f"mock_0_{i:05d}" for i in range(len(result.tasks))]
    attempts = [t.provenance["attempt"] for t in sorted(result.tasks, key=lambda t: t.id)]
    assert attempts == sorted(attempts)


def test_lenient_parsing_of_small_model_replies(mock) -> None:
    text = (
        "Sure! ```json\n"
        + json.dumps(
            {
                "thought": "x",
                "persona": "extra key",
                "user_id": "cus_ana",
                "instruction": "You are Ana. Move 12.5 from acc_1001 to acc_1002.",
                "actions": {
                    "name": "transfer_funds",
                    "args": {"from_account_id": "acc_1001", "to_account_id": "acc_1002", "amount": "12.5"},
                    "id": 3,
                },
                "outputs": 12.5,
            }
        )
        + "\n```"
    )
    assert parse_payload(text).__class__.__name__ == "ProposalError"  # strict parsing refuses it
    payload = parse_payload(text, lenient=True, tools=mock.tools)
    assert payload.actions[0].arguments["amount"] == 12.5 and payload.outputs == ["12.5"]
    review_text = '{"scores": {"correctness": "1", "completeness": true, "satisfaction": "yes", "creativity": 0}}'
    assert parse_review(review_text, 0).scores == {
        "correctness": 1,
        "completeness": 1,
        "satisfaction": 1,
        "creativity": 0,
    }
    assert parse_review('{"scores": {"correctness": "maybe"}}', 0).abstained


def test_dead_server_is_a_recorded_rejection(mock) -> None:
    with ScriptedServer(["x"]) as server:
        url = server.base_url
    dead = OpenAIClient(LLMConfig(model="m", base_url=url, max_retries=0, timeout_s=5))
    result = Phase1Pipeline(mock, sampler=ana(mock), proposer=LLMProposer(dead, mock.tools)).run(
        Phase1Config(n=1, seed=0, max_retries=1, max_attempts=2, concurrency=2)
    )
    assert result.tasks == [] and result.stats.proposals == 4
    assert all(k.startswith("format: LLM call failed") for k in result.stats.failures)


def test_sampler_grounds_writes_and_keeps_test_users_out() -> None:
    retail = load_domain("retail")
    sampler = ContextSampler(retail)
    test_users = {t.user_id for t in retail.task_list("test")}
    assert sampler.excluded_users == test_users & set(retail.snapshot.tables["users"])
    assert all(e.split == "train" for e in sampler.examples)
    with_write = 0
    for seed in range(60):
        context = sampler.sample(random.Random(seed))
        assert context.user_id not in test_users
        assert context.tools[0] in ("find_user_id_by_email", "find_user_id_by_name_zip")
        writes = [t for t in context.tools if t in sampler.graph.writers]
        with_write += bool(writes)
        orders = context.records.get("orders", {})
        if "cancel_pending_order" in writes and any(
            o["status"] == "pending" for o in (retail.snapshot.tables["orders"][k] for k in context.user["orders"])
        ):
            assert any(o["status"] == "pending" for o in orders.values())
        if "exchange_delivered_order_items" in writes and context.candidates:
            variants = next(iter(context.candidates.values()))
            assert all(v["item_id"] for v in variants)
    assert with_write == 60
    airline = load_domain("airline")
    sampler = ContextSampler(airline)
    booked = 0
    for seed in range(40):
        context = sampler.sample(random.Random(seed))
        assert context.tools[0] == "get_user_details" and any(t in sampler.graph.writers for t in context.tools)
        if "book_reservation" in context.tools and context.candidates:
            flights = next(iter(context.candidates.values()))
            assert flights and all("flight_number" in f for f in flights)
            booked += 1
    assert booked >= 1
    assert ContextSampler(airline, include_test_users=True).excluded_users == frozenset()


def test_cli_llm_run_against_scripted_server(mock, tmp_path, capsys) -> None:
    def handler(body: dict[str, Any]) -> str:
        return review(True) if is_review(body) else blueprint("bills")

    with ScriptedServer(handler=handler) as server:
        out = tmp_path / "bp.jsonl"
        rc = blueprints_main(
            [
                "blueprints",
                "--domain",
                "mock",
                "--proposer",
                "llm",
                "--base-url",
                server.base_url,
                "--committee-models",
                "a,b,c",
                "--json-mode",
                "json_schema",
                "--concurrency",
                "2",
                "--n",
                "1",
                "--max-attempts",
                "1",
                "--retries",
                "0",
                "--max-tokens",
                "50",
                "--users",
                "cus_ana",
                "--out",
                str(out),
            ]
        )
        requests = server.requests
    assert rc == 0
    stats = json.loads((tmp_path / "bp.stats.json").read_text())
    assert stats["accepted"] == 1 and stats["stages"]["committee"] == {"reached": 1, "passed": 1}
    assert sorted(r["model"] for r in requests if is_review(r)) == ["a", "b", "c"]
    assert all(r["max_tokens"] == 50 and r["response_format"]["type"] == "json_schema" for r in requests)
    assert "3 reviewers" in capsys.readouterr().out
