"""Agents and factories for the multi-process collector tests (importable by spawned workers)."""

from __future__ import annotations

import os

from apigen_envs.baselines.oracle import OracleAgent


class AlwaysCrashOracle(OracleAgent):
    """The oracle, except that it kills its own process whenever it reaches one task."""

    def __init__(self, task_id: str) -> None:
        object.__setattr__(self, "_task_id", task_id)

    def act(self, conversation, context):  # type: ignore[no-untyped-def]
        if context.task.id == self._task_id and os.environ.get("APIGEN_TEST_PARENT") != str(os.getpid()):
            os._exit(3)
        return super().act(conversation, context)


def broken_factory() -> OracleAgent:
    """A factory that fails in the worker (the parent sees the reason)."""
    if os.environ.get("APIGEN_TEST_PARENT") == str(os.getpid()):
        return OracleAgent()  # the parent builds one too, for the run settings
    raise RuntimeError("no model configured in the worker")
