"""Retail generator, template proposer and the committed data they produced."""

from __future__ import annotations

import json
import random
import warnings
from collections import Counter

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import apigen_envs  # noqa: F401  (registers the Gymnasium ids)
from apigen_envs import load_domain
from apigen_envs.domains.retail import DATA, snapshot_from_json
from apigen_envs.domains.retail.generate import generate_db
from apigen_envs.domains.retail.generate import main as generate_main
from apigen_envs.domains.retail.templates import INTENTS, build_task_set, propose, write_tasks
from apigen_envs.testing import assert_domain_ok
from apigen_envs.verify import replay

WRITE_TOOLS = {
    "cancel_pending_order",
    "exchange_delivered_order_items",
    "modify_pending_order_address",
    "modify_pending_order_items",
    "modify_pending_order_payment",
    "modify_user_address",
    "return_delivered_order_items",
}


@pytest.fixture(scope="module")
def domain():
    return load_domain("retail")


def _check_integrity(db: dict) -> None:
    products, users, orders = db["products"], db["users"], db["orders"]
    item_product = {item: pid for pid, p in products.items() for item in p["variants"]}
    assert len(item_product) == sum(len(p["variants"]) for p in products.values())  # item ids are unique
    assert len({u["email"] for u in users.values()}) == len(users)
    assert len({(u["name"]["first_name"], u["name"]["last_name"], u["address"]["zip"]) for u in users.values()}) == len(
        users
    )
    listed = Counter(o for u in users.values() for o in u["orders"])
    assert set(listed) == set(orders) and set(listed.values()) == {1}
    for order_id, order in orders.items():
        user = users[order["user_id"]]
        assert order_id in user["orders"]
        for item in order["items"]:
            variant = products[item["product_id"]]["variants"][item["item_id"]]
            assert item["price"] == variant["price"] and item["options"] == variant["options"]
        for payment in order["payment_history"]:
            assert payment["payment_method_id"] in user["payment_methods"]
            assert payment["amount"] == round(payment["amount"], 2)
        assert order["payment_history"][0]["amount"] == round(sum(i["price"] for i in order["items"]), 2)
        shipped = [i for f in order["fulfillments"] for i in f["item_ids"]]
        if order["status"] in ("pending", "cancelled"):
            assert not shipped
        else:
            assert sorted(shipped) == sorted(i["item_id"] for i in order["items"])
        if order["status"] == "exchange requested":
            for new in order["exchange_new_items"]:
                assert products[item_product[new]]["variants"][new]["available"]


def test_generator_is_deterministic_and_valid():
    first = generate_db(seed=7)
    assert first == generate_db(seed=7) == generate_db(seed=7, scale=1)
    assert json.dumps(first) != json.dumps(generate_db(seed=8))
    assert {k: len(v) for k, v in first.items()} == {"products": 50, "users": 500, "orders": 1000}
    assert all(5 <= len(p["variants"]) <= 20 for p in first["products"].values())
    statuses = Counter(o["status"] for o in first["orders"].values())
    assert {"pending", "processed", "delivered", "cancelled", "return requested", "exchange requested"} <= set(statuses)
    sources = Counter(m["source"] for u in first["users"].values() for m in u["payment_methods"].values())
    assert set(sources) == {"credit_card", "paypal", "gift_card"}
    _check_integrity(first)
    snapshot_from_json(first)  # validates as records


def test_generator_scale():
    db = generate_db(seed=0, scale=3)
    assert {k: len(v) for k, v in db.items()} == {"products": 50, "users": 1500, "orders": 3000}
    assert db["products"] == generate_db(seed=0, scale=0.1)["products"]  # the catalog does not scale
    _check_integrity(db)
    with pytest.raises(ValueError, match="scale must be positive"):
        generate_db(scale=0)


def test_committed_db_is_the_default_generator_output():
    assert json.loads((DATA / "db.json").read_text()) == generate_db(seed=0, scale=1.0)


def test_generate_cli(tmp_path, capsys):
    out = tmp_path / "sub" / "db.json"
    assert generate_main(["--seed", "3", "--scale", "0.02", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == generate_db(3, 0.02)
    assert "10 users, 20 orders" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        generate_main(["--scale", "-1", "--out", str(out)])


def test_committed_tasks_conform(domain):
    """Gold replays error-free, the oracle passes, the do-nothing agent fails, check_env passes."""
    report = assert_domain_ok(domain)
    assert report.tasks_checked == 211 and not report.gold_errors and not report.noop_passed


def test_committed_tasks_shape(domain):
    tasks = domain.task_list()
    assert Counter(t.split for t in tasks) == {"train": 175, "test": 36}
    intents = Counter(t.provenance["intent"] for t in tasks if t.provenance["proposer"] == "template")
    assert set(intents) == set(INTENTS) and min(intents.values()) >= 5
    assert sum(t.provenance["proposer"] == "recombination" for t in tasks) == 11
    for task in tasks:
        assert task.provenance["proposer"] in ("template", "recombination") and isinstance(task.provenance["seed"], int)
        gold = domain.verifier.gold(task)
        assert gold.changes or task.outputs
        writes = [a.name for a in task.actions if a.name in WRITE_TOOLS]
        assert bool(writes) == bool(gold.changes), task.id
        assert task.actions[0].name in ("find_user_id_by_email", "find_user_id_by_name_zip")
        assert task.user_id and task.user_id in task.actions[1].arguments.values()
    assert any(len({a.name for a in t.actions} & WRITE_TOOLS) == 2 for t in tasks)  # multi-intent tasks
    train_users = {t.user_id for t in domain.task_list("train")}
    assert not train_users & {t.user_id for t in domain.task_list("test")}  # no user in both splits


def test_committed_tasks_are_reproducible(tmp_path):
    # the embedded tasks are the phase-1 pipeline's output (template proposer, offline), byte for byte
    from apigen_envs.cli import main as cli_main

    out = tmp_path / "tasks.json"
    argv = ["blueprints", "--domain", "retail", "--n", "200", "--seed", "0", "--recombine", "20", "--quiet"]
    assert cli_main([*argv, "--out", str(out)]) == 0
    assert out.read_text() == (DATA / "tasks.json").read_text()


def test_propose_every_intent_on_a_generated_db():
    snapshot = snapshot_from_json(generate_db(seed=5, scale=0.5))
    tools = load_domain("retail").tools
    for intent in INTENTS:
        made = [t for s in range(40) if (t := propose(snapshot, random.Random(s), intent)) is not None]
        assert made, intent
        for task in made:
            assert task.provenance["intent"] == intent
            view = snapshot.view()
            assert all(ok for ok, _ in replay(tools, view, task.actions))
            assert view.changes() or task.outputs


def test_propose_returns_none_when_records_do_not_fit():
    db = generate_db(seed=1, scale=0.01)
    for user in db["users"].values():
        user["orders"] = []
    db["orders"] = {}
    snapshot = snapshot_from_json(db)
    for intent in INTENTS:
        task = propose(snapshot, random.Random(0), intent)
        assert (task is None) == (intent != "modify_user_address"), intent
    with pytest.raises(ValueError, match="unknown intent"):
        propose(snapshot, random.Random(0), "refund_everything")
    drawn = [propose(snapshot, random.Random(s)) for s in range(30)]  # no intent given: one is drawn
    assert {t.provenance["intent"] for t in drawn if t is not None} == {"modify_user_address"}


def test_build_task_set_small(tmp_path):
    snapshot = snapshot_from_json(generate_db(seed=2, scale=0.2))
    tasks = build_task_set(snapshot, seed=4, n_train=10, n_test=4)
    assert [t.id for t in tasks] == [f"retail-train-{i:03d}" for i in range(10)] + [
        f"retail-test-{i:03d}" for i in range(4)
    ]
    write_tasks(tasks, tmp_path / "t.json")
    rows = json.loads((tmp_path / "t.json").read_text())
    assert set(rows[0]) >= {"id", "domain", "split", "user_id", "scenario", "actions", "outputs", "provenance"}
    assert rows[0]["provenance"].keys() >= {"proposer", "intent", "seed"}


def test_gymnasium_check_env():
    env = gym.make("apigen/Retail-v0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert obs[0]["role"] == "user" and len(info["tools"]) == 17
