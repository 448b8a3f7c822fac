from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from apigen_envs.cli import main
from apigen_envs.episodes_io import load_episodes


def run_cli(*argv: str) -> int:
    return main(list(argv))


def test_run_oracle_on_mock_writes_episodes_and_report(tmp_path, capsys):
    out = tmp_path / "run" / "episodes.jsonl"
    code = run_cli(
        "run",
        "--domain",
        "mock",
        "--agent",
        "oracle",
        "--user",
        "scripted",
        "--split",
        "train",
        "--trials",
        "2",
        "--out",
        str(out),
        "--quiet",
    )
    text = capsys.readouterr().out
    assert code == 0
    assert "pass^2" in text and "oracle" in text and "noop" in text
    assert len(load_episodes([out])) == 6
    assert (tmp_path / "run" / "report.html").exists()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    by_label = {m["label"]: m for m in metrics}
    assert by_label["oracle"]["pass_hat_k"]["2"] == 1.0 and by_label["noop"]["pass_hat_k"]["1"] == 0.0
    # resuming the same run adds nothing
    assert (
        run_cli(
            "run",
            "--domain",
            "mock",
            "--agent",
            "oracle",
            "--user",
            "scripted",
            "--split",
            "train",
            "--trials",
            "2",
            "--out",
            str(out),
            "--quiet",
        )
        == 0
    )
    assert len(load_episodes([out])) == 6


def test_run_into_a_file_of_other_settings_names_the_setting_or_goes_to_a_new_file(tmp_path, capsys):
    out = tmp_path / "run" / "episodes.jsonl"
    base = ("run", "--domain", "mock", "--agent", "oracle", "--user", "scripted", "--split", "train", "--quiet")
    assert run_cli(*base, "--out", str(out), "--no-baseline") == 0
    before = out.read_bytes()
    assert run_cli(*base, "--out", str(out), "--no-baseline", "--seed", "5") == 1
    assert "base_seed=0" in capsys.readouterr().err and out.read_bytes() == before
    assert run_cli(*base, "--out", str(out), "--seed", "5", "--on-conflict", "new-file") == 0
    assert "this run went to" in capsys.readouterr().out
    moved = tmp_path / "run" / "episodes-2.jsonl"
    assert {e.seed for e in load_episodes([moved])} != {e.seed for e in load_episodes([out])}
    assert run_cli(*base, "--out", str(out), "--retries", "-1") == 2


def test_report_subcommand_and_bad_files(tmp_path, capsys):
    out = tmp_path / "e.jsonl"
    run_cli(
        "run",
        "--domain",
        "mock",
        "--agent",
        "noop",
        "--user",
        "scripted",
        "--trials",
        "1",
        "--out",
        str(out),
        "--quiet",
    )
    capsys.readouterr()
    assert run_cli("report", str(out), "--out", str(tmp_path / "rep")) == 0
    assert "noop" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n{}\n")
    assert run_cli("report", str(bad)) == 1
    assert "bad.jsonl:1" in capsys.readouterr().err
    assert run_cli("report", str(tmp_path / "missing.jsonl")) == 1


def test_bad_flags_and_names(capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli("run", "--agent", "wizard")
    assert exc.value.code == 2
    assert run_cli("run", "--domain", "mock", "--trials", "0") == 2
    assert run_cli("tasks", "--domain", "mokc") == 1
    assert "Did you mean 'mock'" in capsys.readouterr().err


def test_unreachable_server_is_a_clear_error(tmp_path, capsys):
    pytest.importorskip("apigen_envs.baselines.tool_calling")
    code = run_cli(
        "run",
        "--domain",
        "mock",
        "--agent",
        "tool_calling",
        "--user",
        "scripted",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--out",
        str(tmp_path / "e.jsonl"),
        "--quiet",
    )
    assert code == 1
    assert "cannot reach the model server at http://127.0.0.1:9/v1" in capsys.readouterr().err


def test_console_script_entry_point():
    exe = shutil.which("apigen-envs") or str(Path(sys.executable).parent / "apigen-envs")
    result = subprocess.run([exe, "tasks", "--domain", "mock"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "transfer_50" in result.stdout


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_report_renders_in_headless_chromium(tmp_path):
    out = tmp_path / "run" / "episodes.jsonl"
    assert (
        run_cli(
            "run",
            "--domain",
            "mock",
            "--agent",
            "oracle",
            "--user",
            "scripted",
            "--trials",
            "2",
            "--out",
            str(out),
            "--quiet",
        )
        == 0
    )
    page = tmp_path / "run" / "report.html"
    # the page must not execute model text: plant a script tag in a message and check it stays text
    text = page.read_text()
    assert "<script>alert" not in text
    shot = tmp_path / "shot.png"
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=3000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    # the script ran: the summary table, episode list and the first episode's conversation were built
    assert "pass^2" in dom and "mock/transfer_50/0" in dom and "Database changes" in dom
    assert 'class="msg assistant"' in dom
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile2'}",
            "--window-size=1400,1000",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a blank page compresses far smaller
    png_curve = tmp_path / "run" / "pass_k.png"
    if png_curve.exists():
        assert png_curve.read_bytes()[:4] == b"\x89PNG"


def test_report_escapes_model_text(tmp_path, mock_domain):
    from apigen_envs.collect import Collector
    from apigen_envs.messages import AssistantMessage
    from apigen_envs.metrics import summarize_groups
    from apigen_envs.report import write_html

    class Evil:
        name = "evil</script><script>alert(1)</script>"

        def act(self, conversation, context):
            return AssistantMessage(content="<img src=x onerror=alert(1)></script><script>alert(2)</script>")

        async def aact(self, conversation, context):
            return self.act(conversation, context)

    eps = Collector(mock_domain, Evil()).run(mock_domain.task_list()[:1])
    page = write_html(eps, list(summarize_groups(eps).values()), tmp_path / "r.html").read_text()
    assert "</script><script>alert" not in page
    assert page.count("<script") == 2  # the data block and the page script, nothing injected


def test_data_dir_and_semantics_after_the_subcommand_are_used_and_recorded(tmp_path, capsys):
    from apigen_envs.domains.mock import DATA

    data = tmp_path / "mockdata"
    shutil.copytree(DATA, data)
    out = tmp_path / "run" / "episodes.jsonl"
    argv = ["run", "--domain", "mock", "--data-dir", str(data), "--semantics", "tau2", "--agent", "oracle"]
    code = run_cli(*argv, "--user", "scripted", "--trials", "1", "--out", str(out), "--quiet", "--no-baseline")
    text = capsys.readouterr().out
    assert code == 0
    episodes = load_episodes([out])
    assert episodes and {ep.semantics for ep in episodes} == {"tau2"}
    assert {ep.versions["domain_source"] for ep in episodes} == {str(data)}
    assert "semantics" in text.splitlines()[1] or "semantics" in text  # the table shows the profile
    metrics = json.loads((out.parent / "metrics.json").read_text())
    summaries = metrics["summaries"] if isinstance(metrics, dict) else metrics
    assert any(s.get("semantics") == ["tau2"] for s in summaries)


def test_unknown_semantics_is_a_clear_error(tmp_path, capsys):
    code = run_cli("tasks", "--domain", "mock", "--semantics", "tau3")
    assert code != 0
    assert "unknown semantics 'tau3'" in capsys.readouterr().err
