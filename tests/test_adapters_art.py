"""The OpenPipe ART adapter, tested in a fresh interpreter.

Importing ``art`` patches ``transformers`` process-wide (its masking utilities), which breaks any later test
that trains with transformers/TRL in the same process. So the outer test re-runs this file in a subprocess
where only the ART tests run.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from typing import Any

import pytest
from test_adapters import NOOP_SCRIPT, ORACLE_SCRIPT, _run

from apigen_envs.env import ToolUseEnv
from apigen_envs.fake_server import ScriptedServer

INNER = os.environ.get("APIGEN_ART_SUBPROCESS") == "1"
INNER_ONLY = pytest.mark.skipif(not INNER, reason="runs in a fresh interpreter (see module docstring)")


@pytest.mark.skipif(INNER, reason="this is the inner run")
def test_art_adapter_in_a_fresh_interpreter() -> None:
    if importlib.util.find_spec("art") is None:
        pytest.skip("openpipe-art is not installed (pip install -e '.[art]')")
    env = {**os.environ, "APIGEN_ART_SUBPROCESS": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-p", "no:cacheprovider", __file__],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "2 passed" in result.stdout


@pytest.fixture()
def art() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch on import
    return pytest.importorskip("art")


@INNER_ONLY
def test_art_trajectory_marks_policy_choices_and_carries_reward(art: Any) -> None:
    from openai.types.chat.chat_completion import Choice

    from apigen_envs.adapters.art import art_rollout

    with ScriptedServer(ORACLE_SCRIPT) as server:
        traj = _run(server, lambda c: art_rollout(ToolUseEnv("mock"), c, "m", task_id="transfer_50", seed=1))
    assert isinstance(traj, art.Trajectory) and traj.reward == 1.0
    kinds = ["choice" if isinstance(x, Choice) else x["role"] for x in traj.messages_and_choices]
    assert kinds == ["system", "user", "choice", "tool", "choice", "tool", "choice", "user"]
    assert traj.metrics["db_match"] is True and traj.metrics["turns"] == 3
    assert traj.metadata == {"task_id": "transfer_50", "termination": "user_stop", "seed": 1}
    assert traj.tools and traj.tools[0]["type"] == "function"
    messages = traj.messages()  # ART's own flattening works on our items
    assert messages[2]["tool_calls"][0]["function"]["name"] == "find_customer_by_email"


@INNER_ONLY
def test_art_group_over_remote_env(art: Any) -> None:
    pytest.importorskip("fastapi")
    from apigen_envs.adapters.art import art_group
    from apigen_envs.remote import RemoteEnv
    from apigen_envs.server import serve_in_thread

    with serve_in_thread() as srv, ScriptedServer(NOOP_SCRIPT, cycle=True) as server:
        group = _run(server, lambda c: art_group(lambda: RemoteEnv(srv.base_url), c, "m", task_id="transfer_50", n=3))
    assert isinstance(group, art.TrajectoryGroup)
    assert [t.reward for t in group.trajectories] == [0.0, 0.0, 0.0]
    assert [t.metadata["seed"] for t in group.trajectories] == [0, 1, 2]
