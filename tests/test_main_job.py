"""The main job's one screen: agent beside do-nothing and oracle, partial credit, field-level diffs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apigen_envs.baselines.oracle import OracleAgent
from apigen_envs.cli import main
from apigen_envs.collect import Collector
from apigen_envs.fake_server import ScriptedServer
from apigen_envs.metrics import format_partial, partial_credit
from apigen_envs.registry import load_domain
from apigen_envs.report import field_changes, row_changes


def test_partial_credit_of_the_oracle_is_full():
    domain = load_domain("retail")
    task = next(t for t in domain.task_list("test") if len(t.actions) > 3 and t.outputs)
    (episode,) = Collector(domain, OracleAgent(), trials=1).run([task])
    credit = partial_credit(episode, task.actions)
    assert credit.reward == 1.0 and credit.gold_calls == credit.gold_total == len(task.actions)
    assert credit.rows_right == credit.rows_total == len(episode.gold_diff)
    assert credit.outputs_said == credit.outputs_total == len(task.outputs)
    assert partial_credit(episode).gold_calls is None  # actions unknown
    text = format_partial([credit])
    assert f"{len(task.actions)}/{len(task.actions)}" in text


def test_field_changes_are_leaves_not_rows():
    row = {
        "table": "orders",
        "key": "#W1",
        "before": {"status": "pending", "items": [{"id": "1", "price": 10}], "user": "u"},
        "after": {"status": "cancelled", "items": [{"id": "1", "price": 10}], "user": "u", "reason": "no need"},
    }
    assert field_changes(row) == [
        {"field": "status", "before": "pending", "after": "cancelled"},
        {"field": "reason", "before": None, "after": "no need"},
    ]
    (new,) = row_changes([{"table": "t", "key": "k", "before": None, "after": {"a": {"b": 1}}}])
    assert new["kind"] == "new" and new["fields"] == [{"field": "a.b", "before": None, "after": 1}]


def test_run_prints_agent_noop_oracle_and_partial_credit(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "run" / "episodes.jsonl"
    with ScriptedServer(["Hello, how can I help?"], cycle=True) as server:
        argv = ["run", "--domain", "retail", "--num-tasks", "2", "--trials", "2", "--user", "scripted"]
        argv += ["--base-url", server.base_url, "--max-turns", "3", "--quiet", "--out", str(out)]
        code = main(argv)
    text = capsys.readouterr().out
    assert code == 0
    assert "partial credit per episode" in text and "gold calls" in text
    labels = [m["label"] for m in json.loads((out.parent / "metrics.json").read_text())]
    assert labels[1:] == ["noop", "oracle"] and labels[0].startswith("tool_calling")
    oracle = json.loads((out.parent / "metrics.json").read_text())[2]
    assert oracle["pass_hat_k"]["1"] == 1.0
    page = (out.parent / "report.html").read_text()
    assert '"credit"' in page and '"fields"' in page
    # `report` on the run's file shows the same screen: baselines beside it, partial credit below.
    assert main(["report", str(out)]) == 0
    again = capsys.readouterr().out
    assert "oracle" in again and "noop" in again and "partial credit per episode" in again
