"""Blueprint-set figures: each metric moves with the property it measures, and the embedded sets meet the
variety and difficulty thresholds of issue 16."""

from __future__ import annotations

import random

import pytest

from apigen_envs import load_domain
from apigen_envs.datagen import set_stats
from apigen_envs.datagen.set_stats import (
    distinct_ratio,
    has_budget,
    has_condition,
    mask,
    measure,
    near_duplicate_share,
    order_id_given,
    trigrams,
)
from apigen_envs.task import Action, Task, UserScenario

WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "lamp",
    "tiger",
    "violin",
    "desert",
    "pepper",
    "marble",
    "ocean",
    "rocket",
    "candle",
    "forest",
    "mirror",
]


def _task(instruction: str, actions: tuple[Action, ...] = (), outputs: tuple[str, ...] = ()) -> Task:
    return Task(
        id="t", domain="retail", scenario=UserScenario(instruction=instruction), actions=actions, outputs=outputs
    )


def test_mask_hides_ids_emails_names_and_labels() -> None:
    text = "Persona:\nYou are Mia Lopez.\n\nKnown info:\nOrder #W123 and mia.lopez@example.com, zip 90210."
    masked = mask(text, frozenset({"mia", "lopez"}))
    assert "<name> <name>" in masked and "<email>" in masked and "<id>" in masked
    assert "Persona" not in masked and "W123" not in masked and "90210" not in masked
    assert "rose gold" in mask("a rose gold watch", frozenset({"rose"}))  # only capitalised names


def test_distinct_ratio_falls_with_repetition() -> None:
    same = [trigrams("you want to cancel the order today please")] * 30
    rng = random.Random(0)
    varied = [trigrams(" ".join(rng.sample(WORDS, 8))) for _ in range(30)]
    assert distinct_ratio(same) == pytest.approx(1 / 20)  # samples of 20 copies
    assert distinct_ratio(varied) > 0.8


def test_near_duplicates_counted_within_samples() -> None:
    base = trigrams("you want to cancel the order because you no longer need it")
    rng = random.Random(1)
    unique = [trigrams(" ".join(rng.sample(WORDS, 9))) for _ in range(60)]
    assert near_duplicate_share(unique) == 0.0
    assert near_duplicate_share([base] * 60) == 1.0
    assert 0.0 < near_duplicate_share(unique[:40] + [base] * 20) < 1.0


def test_conditions_exclude_the_confirm_line_and_fact_hand_overs() -> None:
    assert has_condition("If it has already shipped, forget it.")
    assert has_condition("Exchange it unless the new one costs more than $20.")
    assert not has_condition("If the agent asks you to confirm, say yes.")
    assert not has_condition("If asked for the reason, say you no longer need it.")
    assert not has_condition("You want to cancel the order.")


def test_budget_and_order_id() -> None:
    assert has_budget("Book the cheapest flight.") and has_budget("Keep it under $300.")
    assert not has_budget("Book the flight on May 3.")
    cancel = (Action(name="cancel_pending_order", arguments={"order_id": "#W1234567"}),)
    assert order_id_given(_task("Cancel order #W1234567.", cancel))
    assert order_id_given(_task("Cancel order W1234567.", cancel))
    assert not order_id_given(_task("Cancel the order with the lamp.", cancel))


def test_measure_counts_writes_refusals_and_transfers() -> None:
    domain = load_domain("retail")
    tasks = domain.task_list()[:40]
    stats = measure(domain, tasks, score=False)
    writes = [
        sum(
            a.name in domain.tools and domain.tools[a.name].mutates and a.name != set_stats.TRANSFER_TOOL
            for a in t.actions
        )
        for t in tasks
    ]
    assert stats.three_writes == sum(w >= 3 for w in writes) / len(tasks)
    assert stats.refusals == sum(w == 0 for w in writes) / len(tasks)
    assert stats.transfers == sum(any(a.name == set_stats.TRANSFER_TOOL for a in t.actions) for t in tasks)
    text = set_stats.table([stats])
    assert "distinct instruction 3-grams" in text and text.count("\n") == len(set_stats._ROWS) + 1


@pytest.mark.parametrize("name", ["retail", "airline"])
def test_embedded_sets_meet_the_thresholds(name: str) -> None:
    stats = measure(load_domain(name))
    assert stats.trigram_ratio >= 0.70
    assert stats.near_duplicates <= 0.15
    assert stats.conditional >= 0.50
    assert stats.multi_intent >= 0.50
    assert stats.three_writes >= 0.15
    assert stats.refusals >= (0.05 if name == "retail" else 0.30)
    assert stats.transfers / stats.tasks >= 0.02
    assert stats.oracle_passes == 1.0 and stats.noop_passes <= 0.05
    assert stats.refusal_family is not None and stats.refusal_family >= (0.05 if name == "retail" else 0.30)
    if name == "retail":
        assert stats.order_id_given is not None and stats.order_id_given <= 0.20
    families = {t.provenance.get("family") for t in load_domain(name).task_list()}
    assert {"refusal", "transfer", "conditional", "multi_intent", "lookup"} <= families


def test_noop_passes_is_measured_for_real() -> None:
    domain = load_domain("retail")
    task = domain.task_list()[0]
    # Reads only and nothing to say (a new id: the set measured may reuse another set's ids).
    empty = task.model_copy(update={"id": "reads-only", "actions": task.actions[:2], "outputs": ()})
    assert measure(domain, [empty]).noop_passes == 1.0
    assert measure(domain, [task]).noop_passes == 0.0
    same_id = task.model_copy(update={"actions": task.actions[:2], "outputs": ()})
    assert measure(domain, [same_id]).noop_passes == 1.0  # not the cached gold of the domain's own task


def test_readme_table_is_the_measured_one() -> None:
    from pathlib import Path

    from conftest import peers_dir

    root = peers_dir()
    if not (root / "retail" / "tasks.json").is_file() or not (root / "airline" / "tasks.json").is_file():
        pytest.skip(f"tau2 peer data not found at {root}")
    columns = []
    for name in ("retail", "airline"):
        columns += [measure(load_domain(name), label="ours"), measure(load_domain(name, root / name), label="tau2")]
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert set_stats.table(columns) in readme
