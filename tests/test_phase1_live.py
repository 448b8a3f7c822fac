"""Live: a tiny phase-1 run (3 attempts) with the real local model (Qwen2.5-Coder-1.5B via llama-cpp-python),
schema-constrained output and a one-member committee, on the mock domain (small policy: cheap on CPU).

Runs only where the server package is installed and the model is cached (or ``APIGEN_LIVE_LLM=1``).
Checks that the loop runs end to end and that the schema makes every reply parseable; it does not expect
blueprints to be accepted: a 1.5B model is a smoke test, not a generator.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from apigen_envs import local_model as lm
from apigen_envs.datagen.committee import Committee
from apigen_envs.datagen.phase1 import Phase1Config, Phase1Pipeline
from apigen_envs.datagen.proposers import LLMProposer
from apigen_envs.datagen.validate import STAGES
from apigen_envs.llm import LLMConfig, OpenAIClient
from apigen_envs.registry import load_domain

pytestmark = pytest.mark.live_llm


@pytest.fixture(scope="module")
def server() -> Iterator[lm.LocalServer]:
    if not lm.server_available():
        pytest.skip('llama-cpp-python[server] is not installed (pip install "apigen-envs[local]")')
    if not lm.is_cached() and not os.environ.get("APIGEN_LIVE_LLM"):
        pytest.skip(f"the local model is not cached in {lm.default_cache_dir()}")
    try:
        model = lm.ensure_model()
    except lm.LocalModelError as exc:
        pytest.skip(f"the local model could not be fetched: {exc}")
    with lm.LocalServer(model, n_ctx=4096, startup_timeout=180) as srv:
        yield srv


def test_tiny_phase1_run_with_the_local_model(server: lm.LocalServer) -> None:
    mock = load_domain("mock")
    client = OpenAIClient(
        LLMConfig(model=server.model, base_url=server.base_url, max_tokens=220, timeout_s=900, max_retries=0)
    )
    proposer = LLMProposer(client, mock.tools, policy=mock.policy, json_mode="llama", reasoning_chars=150)
    committee = Committee(client, size=1, policy=mock.policy, json_mode="llama", diff_chars=1500)
    result = Phase1Pipeline(mock, proposer, committee=committee).run(
        Phase1Config(n=3, seed=0, max_retries=0, max_attempts=3)
    )
    stats = result.stats
    assert stats.attempts == 3 and stats.proposals == 3
    # The grammar makes every reply a well-formed blueprint naming known tools; what format may still refuse
    # is its content (a blueprint about another customer than the sampled one, copied from an example).
    failures = stats.to_dict()["failures"]
    malformed = {k: v for k, v in failures.items() if k.startswith("format:") and "is about user" not in k}
    assert not malformed and stats.reached["format"] == 3, failures
    for previous, stage in zip(STAGES, STAGES[1:], strict=False):
        assert stats.reached[stage] == stats.passed[previous]
    assert stats.accepted == len(result.tasks) == stats.passed["committee"]
    assert stats.llm["proposer_calls"] == 3 and stats.llm["proposer_completion_tokens"] > 0
    for task in result.tasks:
        assert task.provenance["model"] and task.provenance["committee"] != "skipped"
