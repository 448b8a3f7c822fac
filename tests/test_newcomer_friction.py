"""Newcomer friction from issue 19, each fixed and kept fixed."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from apigen_envs.cli import build_parser, main
from apigen_envs.metrics import Summary
from apigen_envs.registry import load_domain
from apigen_envs.simulators.customer_lines import scripted_opening, template_opening
from apigen_envs.simulators.scripted_user import ScriptedUser

REPO = Path(__file__).resolve().parents[1]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_data_dir_accepted_after_the_subcommand():
    args = build_parser().parse_args(["run", "--data-dir", "some/dir", "--domain", "retail"])
    assert args.data_dir == "some/dir"
    assert build_parser().parse_args(["--data-dir", "d", "run"]).data_dir == "d"


def test_report_picks_up_the_baseline_beside_the_episodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "run" / "episodes.jsonl"
    argv = ["run", "--domain", "mock", "--agent", "oracle", "--user", "scripted", "--trials", "2", "--quiet"]
    assert main([*argv, "--num-tasks", "2", "--out", str(out)]) == 0
    assert (out.parent / "baseline-noop.jsonl").is_file()
    (out.parent / "metrics.json").unlink()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "baseline-noop.jsonl" in capsys.readouterr().out
    labels = [m["label"] for m in json.loads((out.parent / "metrics.json").read_text())]
    assert labels == ["oracle", "noop"]
    # Given twice (explicitly), it is read once.
    assert main(["report", str(out), str(out.parent / "baseline-noop.jsonl")]) == 0
    assert len(json.loads((out.parent / "metrics.json").read_text())) == 2


def test_pass_k_png_has_integer_ticks_and_equal_curves_stay_visible():
    pytest.importorskip("matplotlib")
    from apigen_envs.report import png_figure

    agent = Summary(label="tool_calling:local", pass_hat_k={1: 0.0, 2: 0.0})
    noop = Summary(label="noop", pass_hat_k={1: 0.0, 2: 0.0})
    fig = png_figure([agent, noop])
    ax = fig.axes[0]
    assert list(ax.get_xticks()) == [1.0, 2.0]
    first, second = ax.lines
    assert first.get_linestyle() != second.get_linestyle() and second.get_zorder() > first.get_zorder()
    assert first.get_marker() != second.get_marker()


def test_svg_curve_draws_later_lines_dashed():
    from apigen_envs.report import svg_curve

    svg = svg_curve([Summary(label="a", pass_hat_k={1: 0.0}), Summary(label="b", pass_hat_k={1: 0.0})])
    assert svg.count("<polyline") == 2 and svg.count("stroke-dasharray") == 1


def test_scripted_user_opens_with_the_request_not_the_instruction():
    task = next(iter(load_domain("retail").task_list("test")))
    turn = ScriptedUser().respond(task, [])
    assert turn.content.startswith(template_opening(task))
    assert turn.content == scripted_opening(task)
    assert "Persona" not in turn.content and not turn.content.startswith("You are")
    # Who the customer is still comes with it (an agent must identify them), in the first person.
    # (the opening may already carry it, e.g. "The account is under amelia@example.com.").
    assert ("My name is" in turn.content or "@example.com" in turn.content) and "your" not in turn.content.lower()
    mock = load_domain("mock").task("transfer_50")
    assert scripted_opening(mock) == (
        "Hi, I want to move $50 from my checking account acc_1001 to my savings account acc_1002. "
        "My email is ana@example.com."
    )


def test_help_typed_in_play_shows_help_and_is_not_sent(tmp_path: Path):
    from apigen_envs.play import AGENT_HELP, add_play_parser, cmd_play

    parser = argparse.ArgumentParser()
    add_play_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["play", "--domain", "mock", "--task", "transfer_50", "--out", str(tmp_path / "e.jsonl")])
    lines = iter(
        (
            "help",
            '/call find_customer_by_email {"email": "ana@example.com"}',
            '/call transfer_funds {"from_account_id": "acc_1001", "to_account_id": "acc_1002", "amount": 50}',
            "Done: I moved $50 from acc_1001 to acc_1002.",
        )
    )

    def read(prompt: str) -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    out = io.StringIO()
    assert cmd_play(args, input_fn=read, out=out) == 0
    assert out.getvalue().count(AGENT_HELP) == 2  # once on start, once for "help"
    assert "reward: 1.0" in out.getvalue()


def test_export_hf_refuses_a_json_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    target = tmp_path / "x.json"
    assert main(["export", str(tmp_path / "missing.jsonl"), "--format", "hf", "--out", str(target)]) == 1
    assert "*.parquet" in capsys.readouterr().err and not target.exists()


def test_help_has_no_rst_markup_and_every_option_is_explained(capsys: pytest.CaptureFixture[str]):
    parser = build_parser()
    for name, sub in _subparsers(parser).items():
        text = sub.format_help()
        assert "``" not in text, name
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, (name, action.option_strings)
    assert "``" not in parser.format_help()
    run_help = _subparsers(parser)["run"].format_help()
    assert "(default: 0.7)" in run_help and "(default: retail)" in run_help
    assert "never start the local model (default" not in run_help  # no default shown for flags


def test_setup_script_refers_to_files_that_exist():
    text = (REPO / "scripts" / "setup_local_model.sh").read_text()
    assert "DESIGN.md" not in text
    assert "README" in text and "The local model" in (REPO / "README.md").read_text()


def test_main_job_tasks_exist_and_are_the_short_kinds_it_says():
    """The main job names its tasks; a regenerated task set must still hold them (else the job fails)."""
    import re

    script = (Path(__file__).resolve().parents[1] / "scripts" / "main.sh").read_text(encoding="utf-8")
    match = re.search(r"^tasks=([\w,]+)$", script, re.MULTILINE)
    assert match, "scripts/main.sh names its tasks in a tasks=... line"
    retail = load_domain("retail")
    test_ids = {t.id for t in retail.task_list("test")}
    for task_id in match.group(1).split(","):
        assert task_id in test_ids, task_id
        assert 3 <= len(retail.tasks[task_id].actions) <= 4, task_id
    assert '--tasks "$tasks"' in script
