"""A collection run slow enough to be killed mid-way (used by the crash-resume test)."""

from __future__ import annotations

import asyncio
import sys

from apigen_envs.baselines.oracle import OracleAgent
from apigen_envs.collect import Collector


class SlowOracle(OracleAgent):
    """The oracle, with a small delay per turn so episodes overlap in time."""

    async def aact(self, conversation, context):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.02)
        return self.act(conversation, context)


if __name__ == "__main__":
    out, trials = sys.argv[1], int(sys.argv[2])
    Collector("mock", SlowOracle(name="oracle"), trials=trials, concurrency=16).run(out=out)
