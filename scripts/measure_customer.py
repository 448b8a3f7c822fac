"""Measure the LLM customer: whether its first line names the request and whether any line plays the agent.

Each episode is one task (retail and airline test tasks, alternating) played against a fixed agent script
that asks for identification, asks what is wanted, then proposes to go ahead; the customer is the real
:class:`~apigen_envs.simulators.llm_user.LLMUser`. Lines are classified with
:func:`~apigen_envs.simulators.customer_lines.role_confusion` (the rules are in its docstring), checked for
made-up identifiers with :func:`~apigen_envs.simulators.customer_lines.invented_details`, and the
opening with :func:`~apigen_envs.simulators.customer_lines.names_request`. Raw model samples rejected by
the customer's own check are counted too, so the figures show both what the model wrote and what was said.

Usage::

    flock /tmp/llm_cpu.lock python scripts/measure_customer.py --episodes 40 [--base-url URL] [--out FILE]

Without ``--base-url`` the local model is started (see ``apigen-envs serve-local``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

AGENT_SCRIPT = (
    "I can help with that. First, could you please give me your name and email address (or your name and zip "
    "code, or your user id) so I can verify your identity?",
    "Thank you, I found your account. Could you tell me exactly what you would like me to do?",
    "Understood. I will go ahead with what you described. Shall I proceed (yes/no)?",
)


def task_digest(task: Any) -> str:
    """A short digest of a task's full definition: a saved line is only re-classified against the same task."""
    import hashlib

    return hashlib.sha256(task.model_dump_json().encode()).hexdigest()[:16]


def measure(client: Any, episodes: int, *, temperature: float, seed: int, turns: int = 3) -> dict[str, Any]:
    """Play ``episodes`` short conversations and count openings and role confusion.

    Args:
        client: The customer's model client.
        episodes: Conversations to play.
        temperature: Customer temperature.
        seed: Base seed (episode i uses ``seed + i``).
        turns: Agent lines of :data:`AGENT_SCRIPT` to play after the opening (0-3).

    Returns:
        The figures, and every line under ``rows``.

    """
    script = AGENT_SCRIPT[:turns]
    from apigen_envs.messages import AssistantMessage, UserMessage
    from apigen_envs.registry import load_domain
    from apigen_envs.simulators.customer_lines import (
        customer_first_name,
        invented_details,
        names_request,
        role_confusion,
    )
    from apigen_envs.simulators.llm_user import LLMUser

    user = LLMUser(client, temperature=temperature)
    pools = [list(load_domain(name).task_list("test")) for name in ("retail", "airline")]
    tasks = [pools[i % 2][i // 2 % len(pools[i % 2])] for i in range(episodes)]
    rows = []
    for i, task in enumerate(tasks):
        started = time.perf_counter()
        conversation: list[Any] = []
        lines: list[dict[str, Any]] = []
        for turn_index in range(len(script) + 1):
            turn = user.respond(task, conversation, seed=seed + i)
            meta = turn.meta or {}
            agent_lines = [m.content for m in conversation if isinstance(m, AssistantMessage)][-2:]
            lines.append(
                {
                    "line": turn.content,
                    "said_confusion": role_confusion(
                        turn.content, agent_lines, customer_first_name(task), opening=turn_index == 0
                    ),
                    "said_invented": invented_details(turn.content, task, [m.content for m in conversation]),
                    "raw_rejected": meta.get("rejected", []),
                    "source": meta.get("opening") or ("fallback" if meta.get("fallback") else "model"),
                }
            )
            conversation.append(UserMessage(content=turn.content or "..."))
            if turn.stop or turn_index == len(script):
                break
            conversation.append(AssistantMessage(content=script[turn_index]))
        opening = lines[0]
        rows.append(
            {
                "task": task.id,
                "task_digest": task_digest(task),
                "opening": opening["line"],
                "opening_source": opening["source"],
                "opening_names_request": names_request(opening["line"], task),
                "lines": lines,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        print(
            f"[{i + 1}/{episodes}] {task.id} ({opening['source']}, {rows[-1]['seconds']}s): {opening['line'][:100]}",
            file=sys.stderr,
        )
    said = [ln for r in rows for ln in r["lines"]]
    raw = [rej for ln in said for rej in ln["raw_rejected"]]
    return {
        "episodes": len(rows),
        "opening_names_request": sum(r["opening_names_request"] for r in rows) / max(len(rows), 1),
        "opening_by_model": sum(r["opening_source"] == "model" for r in rows),
        "opening_by_template": sum(r["opening_source"] == "template" for r in rows),
        "customer_lines_said": len(said),
        "said_lines_classified_confused": sum(ln["said_confusion"] is not None for ln in said),
        "episodes_with_confused_line": sum(any(ln["said_confusion"] for ln in r["lines"]) for r in rows),
        "said_lines_inventing_details": sum(bool(ln["said_invented"]) for ln in said),
        "later_lines_from_fallback": sum(ln["source"] == "fallback" for ln in said),
        "raw_samples_rejected": len(raw),
        "raw_rejections_by_kind": dict(Counter(rej["why"] for rej in raw)),
        "rows": rows,
    }


def rescore(result: dict[str, Any]) -> dict[str, Any]:
    """Classify the saved lines of a result again with the current rules (after a rule was added)."""
    from apigen_envs.registry import load_domain
    from apigen_envs.simulators.customer_lines import (
        customer_first_name,
        invented_details,
        names_request,
        role_confusion,
    )

    tasks = {t.id: t for name in ("retail", "airline") for t in load_domain(name).task_list(None)}
    rows = result["rows"]
    # Task ids are reused when the embedded sets are regenerated; lines written for another task under the
    # same id would be judged against the wrong request, so such a file is refused rather than rescored.
    changed = [
        r["task"] for r in rows if r["task"] not in tasks or r.get("task_digest") != task_digest(tasks[r["task"]])
    ]
    if changed:
        raise ValueError(
            f"{len(changed)} of {len(rows)} saved rows were written for other tasks than the current ones "
            f"(ids reused after the task sets changed, or a file without task digests), e.g. {changed[:3]}; "
            "measure again instead of rescoring"
        )
    for row in rows:
        task = tasks[row["task"]]
        row["opening_names_request"] = names_request(row["opening"], task)
        heard = [ln["line"] for ln in row["lines"]]
        for index, ln in enumerate(row["lines"]):
            ln["said_confusion"] = role_confusion(ln["line"], (), customer_first_name(task), opening=index == 0)
            # What was heard before this line: earlier customer lines and the script's agent lines.
            ln["said_invented"] = invented_details(ln["line"], task, [*heard[:index], *AGENT_SCRIPT[:index]])
    said = [ln for r in rows for ln in r["lines"]]
    result.update(
        opening_names_request=sum(r["opening_names_request"] for r in rows) / max(len(rows), 1),
        said_lines_classified_confused=sum(ln["said_confusion"] is not None for ln in said),
        episodes_with_confused_line=sum(any(ln["said_confusion"] for ln in r["lines"]) for r in rows),
        said_lines_inventing_details=sum(bool(ln["said_invented"]) for ln in said),
        rescored=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=40, help="conversations (default: %(default)s)")
    parser.add_argument("--base-url", default=None, help="OpenAI-compatible server (default: start the local model)")
    parser.add_argument("--model", default="local", help="model name (default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.7, help="customer temperature (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default: %(default)s)")
    parser.add_argument(
        "--turns", type=int, default=3, help="scripted agent lines after the opening, 0-3 (default: %(default)s)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="local model CPU threads (default: all cores; 1 on a busy machine)"
    )
    parser.add_argument("--out", default=None, help="write the full result (every line) as JSON here")
    parser.add_argument("--rescore", default=None, help="classify a saved --out file again with the current rules")
    args = parser.parse_args(argv)
    if args.rescore:
        try:
            result = rescore(json.loads(Path(args.rescore).read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError) as exc:
            print(f"measure_customer: cannot rescore {args.rescore}: {exc}", file=sys.stderr)
            return 2
        print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
        return 0

    from apigen_envs.llm import LLMConfig, OpenAIClient

    with contextlib.ExitStack() as stack:
        base_url = args.base_url
        model = args.model
        if base_url is None:
            from apigen_envs.local_model import LocalServer, ensure_model

            server = stack.enter_context(LocalServer(ensure_model(), n_threads=args.threads))
            base_url, model = server.base_url, server.model
        client = OpenAIClient(LLMConfig(model=model, base_url=base_url, api_key_env="APIGEN_NO_KEY"), api_key="local")
        started = time.perf_counter()
        result = measure(client, args.episodes, temperature=args.temperature, seed=args.seed, turns=args.turns)
        result["seconds"] = round(time.perf_counter() - started, 1)
    summary = {k: v for k, v in result.items() if k != "rows"}
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
