"""Compatibility with tau2-bench's retail data (read from ../shared/peers/tau2; skipped when absent)."""

from __future__ import annotations

import json
import random

import pytest
from conftest import peers_dir

from apigen_envs import load_domain
from apigen_envs.baselines.noop import NoopAgent
from apigen_envs.baselines.oracle import OracleAgent
from apigen_envs.domains.retail.templates import INTENTS, propose
from apigen_envs.env import ToolUseEnv
from apigen_envs.messages import ToolMessage
from apigen_envs.simulators.scripted_user import ScriptedUser
from apigen_envs.testing import run_episode
from apigen_envs.tools import render_result
from apigen_envs.verify import replay

RETAIL = peers_dir() / "retail"
pytestmark = [
    pytest.mark.peer_data,
    pytest.mark.skipif(not (RETAIL / "db.json").is_file(), reason=f"tau2 peer data not found at {RETAIL}"),
]

# Gold calls of tau2's retail tasks that fail, with the message. Each fails in tau2 for the same reason
# (its tools raise the same ValueError); the tasks include them on purpose, as the look-ups a careful
# agent tries first:
#   2-4: get_product_details is called with an item id; 35, 37, 54, 55: an email the user misremembers;
#   39, 67, 68: a name + zip with the wrong zip; 46-47: order ids without the 'W'; 64: an exchange tried
#   on a pending order (then done with modify_pending_order_items); 105: the only action, an exchange whose
#   price difference ($21.10) is more than the gift card's balance ($17.00).
EXPECTED_GOLD_ERRORS: dict[str, dict[int, str]] = {
    "2": {1: "Product not found"},
    "3": {1: "Product not found"},
    "4": {1: "Product not found"},
    "35": {0: "User not found"},
    "37": {0: "User not found"},
    "38": {0: "User not found"},
    "39": {0: "User not found"},
    "46": {1: "Order not found", 2: "Order not found"},
    "47": {1: "Order not found", 2: "Order not found"},
    "54": {0: "User not found"},
    "55": {0: "User not found"},
    "64": {6: "Non-delivered order cannot be exchanged"},
    "67": {0: "User not found", 1: "User not found"},
    "68": {0: "User not found"},
    "105": {0: "Insufficient gift card balance to pay for the price difference"},
}
# Tasks whose gold actions change nothing, so a do-nothing agent passes the DB check: 10 tasks without a
# write (three end in a transfer) and task 105, whose only write fails. tau2 counts 6 because it also
# judges NL assertions with an LLM, which fails the noop on 24, 62, 67 and 68; we do not score those.
EXPECTED_NOOP_PASSES = ["10", "12", "24", "25", "50", "57", "62", "65", "67", "68", "105"]


@pytest.fixture(scope="module")
def peer():
    return load_domain("retail", RETAIL)


def test_layout_tasks_and_splits(peer):
    assert peer.source == str(RETAIL.resolve())
    assert peer.snapshot.size() == {"products": 50, "users": 500, "orders": 1000}
    assert len(peer.tasks) == 114
    assert len(peer.splits["train"]) == 74 and len(peer.splits["test"]) == 40 and len(peer.splits["base"]) == 114
    assert {t.split for t in peer.tasks.values()} == {"train", "test"}
    task = peer.task("0")
    assert task.user_id == "yusuf_rossi_9620"
    assert task.reward_basis == ("db",)
    assert task.scenario.known_info == "You are Yusuf Rossi in zip code 19122."
    assert task.instruction.startswith("Reason for call:\nYou received your order #W2378156")
    assert "Known info:\nYou are Yusuf Rossi" in task.instruction and "Task instructions:\n" in task.instruction
    assert [a.name for a in task.actions][-1] == "exchange_delivered_order_items"
    info = peer.task("16")
    assert info.outputs == ("8276.23",) and info.nl_assertions and info.reward_basis == ("db",)
    assert peer.semantics.name == "tau2"
    provenance = peer.task("4").provenance
    assert provenance["source"] == "tau2" and provenance["tau2_id"] == "4"
    assert provenance["tau2_reward_basis"] == ["DB", "NL_ASSERTION"] and provenance["issues"]
    assert peer.policy.startswith("# Retail agent policy")
    assert peer.user_guidelines


def test_gold_call_outcomes_match_tau2(peer):
    for task in peer.tasks.values():
        gold = peer.verifier.gold(task)
        # Failed calls read as tau2's env shows them: "Error: " and the tool's message.
        assert all(message.startswith("Error: ") for _, message in gold.errors), task.id
        errors = {i: message.removeprefix("Error: ") for i, message in gold.errors}
        assert errors == EXPECTED_GOLD_ERRORS.get(task.id, {}), task.id


def test_oracle_scores_one_on_every_task_and_gold_calls_fail_as_in_tau2(peer):
    env = ToolUseEnv(peer, user=ScriptedUser(), max_turns=100)
    for task in peer.tasks.values():
        reward, messages = run_episode(env, OracleAgent(), task_id=task.id)
        assert reward == 1.0, task.id
        results = [m for m in messages if isinstance(m, ToolMessage)]
        assert len(results) == len(task.actions), task.id
        failed = {i: m.content.removeprefix("Error: ") for i, m in enumerate(results) if m.error}
        assert failed == EXPECTED_GOLD_ERRORS.get(task.id, {}), task.id


def test_noop_agent_pass_count(peer):
    env = ToolUseEnv(peer, max_turns=100)
    passed = [t for t in peer.tasks if run_episode(env, NoopAgent(), task_id=t)[0] == 1.0]
    assert passed == EXPECTED_NOOP_PASSES
    assert len(passed) == 11  # of 114


def test_tool_outputs_are_tau2_json(peer):
    raw = json.loads((RETAIL / "db.json").read_text())
    view = peer.snapshot.view()
    optional = dict.fromkeys(
        [
            "cancel_reason",
            "exchange_items",
            "exchange_new_items",
            "exchange_payment_method_id",
            "exchange_price_difference",
            "return_items",
            "return_payment_method_id",
        ]
    )
    for order_id, order in raw["orders"].items():
        out = json.loads(render_result(peer.tools.call(view, "get_order_details", {"order_id": order_id})))
        assert out == {**order, **optional}
    for user_id, user in raw["users"].items():
        assert json.loads(render_result(peer.tools.call(view, "get_user_details", {"user_id": user_id}))) == user
    for product_id, product in raw["products"].items():
        out = peer.tools.call(view, "get_product_details", {"product_id": product_id})
        assert json.loads(render_result(out)) == product
    listing = json.loads(peer.tools.call(view, "list_all_product_types", {}))
    assert listing == {p["name"]: p["product_id"] for p in raw["products"].values()}


def test_proposer_works_on_the_peer_snapshot(peer):
    made = 0
    for seed in range(60):
        task = propose(peer.snapshot, random.Random(seed), INTENTS[seed % len(INTENTS)])
        if task is not None:
            made += 1
            assert all(ok for ok, _ in replay(peer.tools, peer.snapshot.view(), task.actions))
    assert made >= 20
