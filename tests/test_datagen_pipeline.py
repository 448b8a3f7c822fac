"""Phase-1 pipeline with scripted LLMs: proposals, committee votes, feedback retries, recombination,
template determinism, statistics and the CLI."""

from __future__ import annotations

import json
import random

import pytest

import apigen_envs.domains.mock.templates as mock_templates
from apigen_envs.datagen.cli import main as blueprints_main
from apigen_envs.datagen.committee import CRITERIA, Committee, parse_review, vote
from apigen_envs.datagen.context import ContextSampler
from apigen_envs.datagen.phase1 import Phase1Config, Phase1Pipeline, Phase1Stats, write_blueprints
from apigen_envs.datagen.proposers import LLMProposer, TemplateProposer
from apigen_envs.datagen.recombine import combine, merge_actions
from apigen_envs.datagen.validate import STAGES, Deduplicator
from apigen_envs.domain import load_tasks
from apigen_envs.llm import ScriptedLLM
from apigen_envs.registry import load_domain
from apigen_envs.task import Action, Task, UserScenario
from apigen_envs.verify import Verifier


@pytest.fixture(scope="module")
def mock():
    return load_domain("mock")


def blueprint(*actions: tuple[str, dict], outputs: list[str] | None = None, text: str = "You are Ana.") -> str:
    body = {
        "user_id": "cus_ana",
        "instruction": text,
        "actions": [{"name": n, "arguments": a} for n, a in actions],
        "outputs": outputs or [],
    }
    return "Reasoning: the user wants this.\n```json\n" + json.dumps(body) + "\n```"


IDENTIFY_ANA = ("find_customer_by_email", {"email": "ana@example.com"})
GOOD = blueprint(
    IDENTIFY_ANA,
    ("set_account_nickname", {"account_id": "acc_1001", "nickname": "bills"}),
    text="You are Ana Silva (ana@example.com). Name your account acc_1001 'bills'.",
)
POLICY_BAD = blueprint(("set_account_nickname", {"account_id": "acc_1001", "nickname": "bills"}))
EXEC_BAD = blueprint(IDENTIFY_ANA, ("close_account", {"account_id": "acc_1001", "reason": "fees"}))
TRIVIAL = blueprint(IDENTIFY_ANA, ("get_account_details", {"account_id": "acc_1001"}))
UNKNOWN_TOOL = blueprint(("delete_everything", {}))
ACCEPT = json.dumps({"scores": dict.fromkeys(CRITERIA, 1), "comment": "fine"})
REJECT = json.dumps({"scores": {**dict.fromkeys(CRITERIA, 1), "completeness": 0}, "comment": "vague instruction"})


def ana(domain) -> ContextSampler:
    """A sampler whose contexts are all about Ana, the customer the scripted blueprints are written for."""
    return ContextSampler(domain, user_ids=["cus_ana"])


def run_llm(mock, replies, n=1, retries=0, committee=None, max_attempts=None):
    llm = ScriptedLLM(replies)
    pipeline = Phase1Pipeline(mock, sampler=ana(mock), proposer=LLMProposer(llm, mock.tools), committee=committee)
    result = pipeline.run(Phase1Config(n=n, seed=3, max_retries=retries, max_attempts=max_attempts or n))
    return result, llm


# ---------------------------------------------------------------------------------------------- proposals
def test_llm_good_proposal_is_accepted_with_provenance(mock) -> None:
    result, llm = run_llm(mock, [GOOD])
    assert len(result.tasks) == 1
    task = result.tasks[0]
    assert task.user_id == "cus_ana"
    prov = task.provenance
    assert prov["proposer"] == "llm" and prov["seed"] == 3 and prov["retries"] == 0
    # No committee ran: it is recorded as skipped, never as passed.
    assert prov["stages_passed"] == [s for s in STAGES if s != "committee"]
    assert prov["committee"] == "skipped"
    assert result.stats.skipped["committee"] == 1 and result.stats.passed["committee"] == 0
    assert prov["attempts"] == 1 and prov["feedback_rounds"] == 0 and "model" in prov and "family" in prov
    assert prov["reasoning"].startswith("Reasoning")
    assert prov["context"]["tools"]
    # The context reached the model, and a seed was sent.
    request = llm.requests[0]
    assert "## Tool path" in request.messages[1]["content"] and request.seed is not None
    # Gold-replayable and failed by the do-nothing agent.
    gold = Verifier(mock.snapshot, mock.tools, mock.semantics).gold(task)
    assert not gold.errors and gold.changes


@pytest.mark.parametrize(
    ("reply", "stage", "needle"),
    [
        (POLICY_BAD, "policy", "mock.identify_first"),
        (EXEC_BAD, "execution", "balance must be zero"),
        (TRIVIAL, "execution", "change nothing"),
        (UNKNOWN_TOOL, "format", "unknown tool 'delete_everything'"),
        ("I cannot help with that.", "format", "no JSON object"),
        ('{"instruction": "x", "actions": [{"tool": "a"}]}', "format", "wrong schema"),
    ],
)
def test_llm_bad_proposals_fail_their_stage(mock, reply: str, stage: str, needle: str) -> None:
    result, _ = run_llm(mock, [reply])
    assert result.tasks == []
    stats = result.stats
    assert stats.proposals == 1 and stats.accepted == 0
    failed = [s for s in STAGES if stats.reached[s] and not stats.passed[s]]
    assert failed == [stage]
    assert any(k.startswith(f"{stage}:") for k in stats.failures)
    assert needle in " ".join(stats.failures) or stage != "policy"


def test_trivial_outputs_only_blueprint_is_accepted_when_output_required(mock) -> None:
    info = blueprint(IDENTIFY_ANA, ("get_account_details", {"account_id": "acc_1002"}), outputs=["80.5"])
    result, _ = run_llm(mock, [info])
    assert len(result.tasks) == 1 and result.tasks[0].outputs == ("80.5",)


def test_duplicate_is_rejected_and_retried(mock) -> None:
    other = blueprint(
        IDENTIFY_ANA,
        ("set_account_nickname", {"account_id": "acc_1002", "nickname": "trip"}),
        text="You are Ana Silva (ana@example.com). Name your account acc_1002 'trip'.",
    )
    result, llm = run_llm(mock, [GOOD, GOOD, other], n=2, retries=1, max_attempts=2)
    assert len(result.tasks) == 2
    assert result.stats.failures and next(iter(result.stats.failures)).startswith("dedup:")
    assert "same actions as accepted blueprint" in llm.requests[2].messages[-1]["content"]


def test_feedback_loop_succeeds_on_retry_two(mock) -> None:
    result, llm = run_llm(mock, [POLICY_BAD, EXEC_BAD, GOOD], retries=3)
    assert len(result.tasks) == 1
    stats = result.stats
    assert stats.retries == 2 and stats.accepted_first_try == 0 and stats.proposals == 3
    assert result.tasks[0].provenance["retries"] == 2
    assert len(result.tasks[0].provenance["feedback"]) == 2
    # Each retry carries the previous rejection's reasons.
    assert len(llm.requests[0].messages) == 2  # no feedback on the first try
    assert "mock.identify_first" in llm.requests[1].messages[-1]["content"]
    # Every earlier attempt and all feedback go back: round 1 is still in the third request.
    third = llm.requests[2].messages
    assert "balance must be zero" in third[-1]["content"] and "mock.identify_first" in third[3]["content"]
    assert third[2]["role"] == "assistant" and "set_account_nickname" in third[2]["content"]
    assert stats.rates()["with_feedback"] == 1.0 and stats.rates()["without_feedback"] == 0.0


def test_retries_exhausted_gives_up(mock) -> None:
    result, llm = run_llm(mock, [POLICY_BAD] * 3, retries=2)
    assert result.tasks == [] and llm.calls == 3 and result.stats.attempts == 1


# ---------------------------------------------------------------------------------------------- committee
def test_committee_unanimous_accept_single_client_distinct_seeds(mock) -> None:
    reviewers = ScriptedLLM([ACCEPT], cycle=True)
    result, _ = run_llm(mock, [GOOD], committee=Committee(reviewers, size=3, policy=mock.policy))
    assert len(result.tasks) == 1
    committee = result.tasks[0].provenance["committee"]
    assert committee["votes"] == dict.fromkeys(CRITERIA, 1) and committee["score"] == 1.0
    assert committee["abstentions"] == 0 and all(v == 0 for v in committee["disagreement"].values())
    seeds = [r.seed for r in reviewers.requests]
    assert len(set(seeds)) == 3
    assert "set_account_nickname" in reviewers.requests[0].messages[1]["content"]  # tools and diff shown
    assert '"before"' in reviewers.requests[0].messages[1]["content"]


def test_committee_split_vote_records_disagreement() -> None:
    reviews = [parse_review(ACCEPT, 0), parse_review(REJECT, 1), parse_review(ACCEPT, 2)]
    verdict = vote(reviews, threshold=1.0)
    assert verdict.accepted and verdict.votes["completeness"] == 1
    assert verdict.disagreement["completeness"] == pytest.approx(1 / 3)
    two_against = vote([parse_review(REJECT, 0), parse_review(REJECT, 1), parse_review(ACCEPT, 2)], threshold=1.0)
    assert not two_against.accepted and two_against.score == 0.75
    assert "completeness voted 0: vague instruction; vague instruction" in two_against.reasons[0]
    assert vote([parse_review(REJECT, 0)], threshold=0.75).accepted  # 3/4 clears a 3/4 threshold


def test_committee_malformed_reviews_abstain(mock) -> None:
    assert parse_review("looks good!", 0).abstained
    bad_score = parse_review(json.dumps({"scores": {**dict.fromkeys(CRITERIA, 1), "creativity": 5}}), 1)
    assert bad_score.abstained and "creativity" in (bad_score.error or "")
    reviewers = [ScriptedLLM(["no json here"]), ScriptedLLM([ACCEPT]), ScriptedLLM([ACCEPT])]
    result, _ = run_llm(mock, [GOOD], committee=Committee(reviewers))
    committee = result.tasks[0].provenance["committee"]
    assert committee["abstentions"] == 1
    assert committee["reviews"][0]["abstained"] and "scores" in committee["reviews"][0]["error"]
    everyone_abstains = vote([parse_review("", 0), parse_review("?", 1)], 0.75)
    assert not everyone_abstains.accepted and "abstained" in everyone_abstains.reasons[0]


def test_committee_rejection_feeds_back_review_summary(mock) -> None:
    reviewers = ScriptedLLM([REJECT, REJECT, ACCEPT, ACCEPT, ACCEPT, ACCEPT])
    committee = Committee(reviewers, size=3, threshold=1.0)
    result, llm = run_llm(mock, [GOOD, GOOD], retries=1, committee=committee)
    assert len(result.tasks) == 1 and result.stats.passed["committee"] == 1
    assert result.stats.reached["committee"] == 2
    assert "vague instruction" in llm.requests[1].messages[-1]["content"]


def test_committee_config_errors() -> None:
    with pytest.raises(ValueError, match="threshold"):
        Committee(ScriptedLLM([ACCEPT]), threshold=0)
    with pytest.raises(ValueError, match="at least one"):
        Committee([])


# ---------------------------------------------------------------------------------------------- recombination
def _part(task_id: str, actions: list[tuple[str, dict]], text: str, user: str = "cus_chloe") -> Task:
    return Task(
        id=task_id,
        domain="mock",
        user_id=user,
        scenario=UserScenario(instruction=text),
        actions=tuple(Action(name=n, arguments=a) for n, a in actions),
    )


IDENTIFY_CHLOE = ("find_customer_by_email", {"email": "chloe@example.com"})


def test_recombination_conflict_is_rejected_by_policy(mock) -> None:
    close = _part(
        "close", [IDENTIFY_CHLOE, ("close_account", {"account_id": "acc_3001", "reason": "fees"})], "Close it."
    )
    rename = _part(
        "rename", [IDENTIFY_CHLOE, ("set_account_nickname", {"account_id": "acc_3001", "nickname": "old"})], "Rename."
    )
    proposal = combine([close, rename], mock.tools, random.Random(0))
    assert [a.name for a in proposal.actions] == ["find_customer_by_email", "close_account", "set_account_nickname"]
    assert proposal.extra["recombined_from"] == ["close", "rename"]
    pipeline = Phase1Pipeline(mock, TemplateProposer(mock_templates, mock.snapshot))
    evaluation = pipeline.evaluate(proposal, Deduplicator(mock.tools))
    assert not evaluation.accepted
    assert evaluation.failure is not None and evaluation.failure.stage == "policy"
    assert "mock.closed_is_final" in evaluation.failure.reasons[0]
    # The other order is fine: rename, then close.
    ok = pipeline.evaluate(combine([rename, close], mock.tools, random.Random(0)), Deduplicator(mock.tools))
    assert ok.accepted and "1. Rename.\n2. Close it." in ok.task.instruction


def test_recombination_with_llm_instruction_and_bad_input(mock) -> None:
    a = _part("a", [IDENTIFY_CHLOE, ("set_account_nickname", {"account_id": "acc_3001", "nickname": "x"})], "A")
    b = _part("b", [IDENTIFY_CHLOE, ("close_account", {"account_id": "acc_3001", "reason": "fees"})], "B")
    writer = ScriptedLLM(['{"instruction": "You are Chloe. Rename acc_3001 to x, then close it (fees)."}'])
    proposal = combine([a, b], mock.tools, random.Random(0), writer)
    assert proposal.instruction.startswith("You are Chloe.") and proposal.extra["instruction_writer"] == "llm"
    fallback = combine([a, b], mock.tools, random.Random(0), ScriptedLLM(["sorry"]))
    assert fallback.extra["instruction_writer"] == "template_join"
    assert len(merge_actions([a, b], mock.tools)) == 3  # the repeated identification is kept once
    with pytest.raises(ValueError, match="one user"):
        combine([a, _part("c", [], "C", user="cus_ana")], mock.tools, random.Random(0))
    with pytest.raises(ValueError, match="at least two"):
        combine([a], mock.tools, random.Random(0))


# ---------------------------------------------------------------------------------------------- templates
def test_mock_templates_deterministic_per_seed(mock) -> None:
    for intent in (*mock_templates.INTENTS, None):
        first = mock_templates.propose(mock.snapshot, random.Random(11), intent)
        again = mock_templates.propose(mock.snapshot, random.Random(11), intent)
        assert first == again and first is not None
    with pytest.raises(ValueError, match="unknown intent"):
        mock_templates.propose(mock.snapshot, random.Random(0), "rob_bank")

    def run(seed: int) -> list[dict]:
        pipeline = Phase1Pipeline(mock, TemplateProposer(mock_templates, mock.snapshot))
        result = pipeline.run(Phase1Config(n=8, seed=seed, recombine=2))
        return [t.model_dump() for t in result.tasks]

    assert run(5) == run(5)
    assert run(5) != run(6)


def stats_add_up(stats: Phase1Stats) -> None:
    for previous, stage in zip(STAGES, STAGES[1:], strict=False):
        assert stats.reached[stage] + stats.skipped[stage] == stats.passed[previous]
    failed = sum(stats.failures.values())
    assert stats.reached["format"] == stats.proposals
    assert stats.proposals == failed + stats.accepted
    assert stats.passed["committee"] + stats.skipped["committee"] == stats.accepted
    assert stats.attempts + stats.retries == stats.proposals + stats.no_candidate


def test_template_pipeline_on_mock_stats_add_up_and_blueprints_verify(mock) -> None:
    pipeline = Phase1Pipeline(mock, TemplateProposer(mock_templates, mock.snapshot))
    result = pipeline.run(Phase1Config(n=12, seed=0, recombine=4, split_ratio=0.5))
    stats = result.stats
    stats_add_up(stats)
    assert stats.accepted == len([t for t in result.tasks if "recombined_from" not in t.provenance])
    assert stats.recombined_tried >= 1
    assert len({t.id for t in result.tasks}) == len(result.tasks)
    verifier = Verifier(mock.snapshot, mock.tools, mock.semantics)
    from apigen_envs.datagen.validate import check_triviality

    for task in result.tasks:
        assert not verifier.gold(task).errors
        assert check_triviality(task, mock.snapshot, mock.tools).passed
    # Splits by user: no user on both sides.
    train = {t.user_id for t in result.tasks if t.split == "train"}
    test = {t.user_id for t in result.tasks if t.split == "test"}
    assert train and test and not train & test


def test_llm_pipeline_stats_add_up(mock) -> None:
    replies = [POLICY_BAD, GOOD, "garbage", TRIVIAL, EXEC_BAD, UNKNOWN_TOOL]
    result, _ = run_llm(mock, replies, n=3, retries=1, max_attempts=3)
    stats_add_up(result.stats)
    assert result.stats.accepted == 1 and result.stats.proposals == 6 and result.stats.attempts == 3
    assert result.stats.reached["format"] == 6 and result.stats.passed["format"] == 4


# ---------------------------------------------------------------------------------------------- io / cli
def test_write_and_reload_blueprints(mock, tmp_path) -> None:
    pipeline = Phase1Pipeline(mock, TemplateProposer(mock_templates, mock.snapshot))
    result = pipeline.run(Phase1Config(n=4, seed=1))
    for name in ("bp.jsonl", "bp.json"):
        path, stats_path = write_blueprints(result.tasks, result.stats, tmp_path / name)
        assert load_tasks(path, "mock") == result.tasks
        assert json.loads(stats_path.read_text())["accepted"] == 4


def test_cli_template_run(tmp_path, capsys) -> None:
    out = tmp_path / "mock.jsonl"
    code = blueprints_main(["blueprints", "--domain", "mock", "--n", "5", "--seed", "2", "--out", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "committee" in printed and "wrote 5 blueprints" in printed
    assert len(out.read_text().splitlines()) == 5
    assert (tmp_path / "mock.stats.json").exists()


def test_cli_bad_input(tmp_path, capsys, monkeypatch) -> None:
    assert blueprints_main(["blueprints", "--domain", "mock", "--n", "0"]) == 2
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert blueprints_main(["blueprints", "--domain", "mock", "--proposer", "llm"]) == 2
    assert "need a model" in capsys.readouterr().err
    assert blueprints_main(["blueprints", "--domain", "nowhere", "--out", str(tmp_path / "x.jsonl")]) == 1


# ---------------------------------------------------------------------------------------------- copies
def test_blueprint_about_another_customer_fails_format(mock) -> None:
    other = json.dumps(
        {
            "user_id": "cus_ben",
            "instruction": "You are Ben Okafor (ben@example.com). Name your account acc_2001 'daily'.",
            "actions": [
                {"name": "find_customer_by_email", "arguments": {"email": "ben@example.com"}},
                {"name": "set_account_nickname", "arguments": {"account_id": "acc_2001", "nickname": "daily"}},
            ],
            "outputs": [],
        }
    )
    result, _ = run_llm(mock, [other])
    assert result.tasks == []
    (failure,) = result.stats.failures
    assert failure.startswith("format: the blueprint is about user 'cus_ben', not the sampled customer 'cus_ana'")


def test_copy_of_a_few_shot_example_fails_dedup(mock) -> None:
    example = mock.tasks["balance_and_nickname"]  # train split: in the proposer's few-shot pool
    # The example's instruction word for word, with an identification step added so the rule stages pass.
    actions = [IDENTIFY_ANA, *((a.name, dict(a.arguments)) for a in example.actions)]
    result, _ = run_llm(mock, [blueprint(*actions, text=example.instruction)])
    assert result.tasks == []
    assert result.stats.failures == {"dedup: instruction <x>% identical to accepted blueprint balance_and_nickname": 1}


def test_template_runs_are_not_deduplicated_against_the_embedded_set(mock) -> None:
    # Regenerating an embedded set from templates must be able to produce its own blueprints again.
    pipeline = Phase1Pipeline(mock, TemplateProposer(mock_templates, mock.snapshot))
    assert pipeline.run(Phase1Config(n=3, seed=0)).tasks


def test_sampler_refuses_unknown_users(mock) -> None:
    with pytest.raises(ValueError, match="unknown users"):
        ContextSampler(mock, user_ids=["cus_nobody"])
    sampler = ContextSampler(mock, user_ids=["cus_ben"])  # a test-split user, asked for explicitly
    assert {sampler.sample(random.Random(i)).user_id for i in range(5)} == {"cus_ben"}
