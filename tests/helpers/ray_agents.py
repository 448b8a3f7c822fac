"""Agents for the Ray backend tests (importable by Ray workers)."""

from __future__ import annotations

import os
from pathlib import Path

from apigen_envs.baselines.oracle import OracleAgent


class CrashOnceOracle(OracleAgent):
    """The oracle, except that the first worker to reach the marker's task kills its own process."""

    def __init__(self, marker: str, task_id: str) -> None:
        object.__setattr__(self, "_marker", marker)
        object.__setattr__(self, "_task_id", task_id)

    def act(self, conversation, context):  # type: ignore[no-untyped-def]
        if context.task.id == self._task_id and not Path(self._marker).exists():
            Path(self._marker).write_text("crashed")
            os._exit(1)  # a hard crash: no cleanup, no exception to catch
        return super().act(conversation, context)


def make_oracle() -> OracleAgent:
    """Factory used by the workers."""
    return OracleAgent()
