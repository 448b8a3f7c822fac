r"""GRPO-style group rollouts with an LLM policy served by any OpenAI-compatible server.

For each task, G episodes run concurrently from the same DB start with different seeds; the script prints
each group's rewards and advantages, pass^k over all groups, and can write the trainer samples (chat
messages, tool schemas, reward, advantage, policy mask) as JSONL for an RL trainer.

Against a server (vLLM, SGLang, llama.cpp, Ollama, a hosted API; the key is read from $OPENAI_API_KEY)::

    python examples/rollout_groups.py --base-url http://127.0.0.1:8000/v1 --model my-model \\
        --domain retail --split train --tasks 8 -G 8 --temperature 1.0 --out groups.jsonl

Offline demo (a scripted local server whose replies succeed on some seeds and fail on others)::

    python examples/rollout_groups.py --demo
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from apigen_envs import load_domain
from apigen_envs.baselines.tool_calling import ToolCallingAgent
from apigen_envs.llm import LLMConfig, OpenAIClient
from apigen_envs.rl import OracleBatchPolicy, rollout_groups


def demo_handler(domain: str) -> Any:
    """A scripted-server handler: the gold next turn, except a refusal on every third seed."""
    oracle = OracleBatchPolicy(domain)

    def handle(body: Mapping[str, Any]) -> Any:
        if (body.get("seed") or 0) % 3 == 0:
            return "Sorry, I cannot help with that."
        # The agent adds system notes after tool results; the oracle only reads user and tool messages.
        turn = oracle.act([m for m in body["messages"] if m.get("role") != "system"])
        return turn.to_openai()

    return handle


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default="local", help="model name sent to the server")
    parser.add_argument("--demo", action="store_true", help="run against a scripted local server (offline)")
    parser.add_argument("--domain", default="mock")
    parser.add_argument("--split", default=None, help="task split (train tasks for training)")
    parser.add_argument("--tasks", type=int, default=None, help="use the first N tasks")
    parser.add_argument("-G", "--group-size", type=int, default=4, help="episodes per task (GRPO group)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-turns", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--reward", choices=("binary", "shaped"), default="binary")
    parser.add_argument("--dr-grpo", action="store_true", help="advantages without std scaling")
    parser.add_argument("--seed", type=int, default=0, help="run seed (episode seeds derive from it)")
    parser.add_argument("--out", type=Path, default=None, help="write trainer samples as JSONL")
    args = parser.parse_args(argv)
    if not args.demo and not args.base_url:
        parser.error("give --base-url URL (or --demo)")

    domain = load_domain(args.domain)
    tasks = [t.id for t in domain.task_list(args.split)][: args.tasks]

    def run(base_url: str) -> Any:
        client = OpenAIClient(LLMConfig(model=args.model, base_url=base_url, temperature=args.temperature))
        agent = ToolCallingAgent(client, name=f"tool_calling:{args.model}")
        return rollout_groups(
            domain,
            tasks,
            agent,
            args.group_size,
            base_seed=args.seed,
            max_turns=args.max_turns,
            concurrency=args.concurrency,
            reward_mode=args.reward,
            scale_std=not args.dr_grpo,
            agent_config={"model": args.model, "temperature": args.temperature},
        )

    if args.demo:
        from apigen_envs.fake_server import ScriptedServer

        with ScriptedServer(handler=demo_handler(args.domain)) as server:
            batch = run(server.base_url)
    else:
        batch = run(args.base_url)

    for group in batch.groups:
        rewards = " ".join(f"{r:.2f}" for r in group.rewards)
        advantages = " ".join(f"{a:+.2f}" for a in group.advantages)
        print(f"{group.task_id:<28} rewards [{rewards}]  advantages [{advantages}]")
    ks = range(1, args.group_size + 1)
    print("pass^k: " + ", ".join(f"k={k}: {batch.pass_hat_k(k):.3f}" for k in ks if batch.pass_hat_k(k) is not None))
    if args.out is not None:
        with args.out.open("w", encoding="utf-8") as fh:
            for sample in batch.to_trainer_samples():
                fh.write(json.dumps(sample.model_dump(), ensure_ascii=False) + "\n")
        print(f"wrote {len(batch.episodes)} trainer samples to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
