"""OpenPipe ART adapter: an episode of our env as an ``art.Trajectory`` with the verifier's reward.

ART trains on ``Trajectory.messages_and_choices``: plain dicts are context (system prompt, customer,
tool results) and ``Choice`` objects are the policy's own outputs, which ART marks trainable. A rollout
here sends every policy request through the model's OpenAI-compatible client
(``model.openai_client()`` in ART, or any ``openai.AsyncOpenAI``), keeps the returned ``Choice``
untouched, and sets ``reward`` from our verifier, with the breakdown in ``metrics``/``metadata``.
Groups of such rollouts per task make ``art.TrajectoryGroup`` s for GRPO.

Checked against openpipe-art 0.5.18 (client side; no GPU backend needed).
"""

from __future__ import annotations

from typing import Any

from apigen_envs.adapters import drive_episode, openai_policy


def _require_art() -> Any:
    try:
        import art  # type: ignore[import-not-found]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the ART adapter needs `pip install openpipe-art`") from exc
    return art


async def art_rollout(
    env: Any,
    client: Any,
    model: str,
    *,
    task_id: str | None = None,
    task_index: int | None = None,
    seed: int | None = None,
    **sampling: Any,
) -> Any:
    """Run one episode with the policy behind ``client`` and return it as an ``art.Trajectory``.

    Args:
        env: A ToolUseEnv or RemoteEnv.
        client: ``openai.AsyncOpenAI``-style client (``art_model.openai_client()``).
        model: Model name (``art_model.get_inference_name()`` for a trainable ART model).
        task_id: Task to run.
        task_index: Or its index.
        seed: Episode seed.
        **sampling: Extra request fields (temperature, max_tokens...).

    Returns:
        The trajectory: ``reward`` from the verifier; ``metrics`` with ``shaped``, ``db_match``,
        ``turns``; ``metadata`` with the task id, termination and seed.

    """
    art = _require_art()
    options: dict[str, Any] = {}
    if task_id is not None:
        options["task_id"] = task_id
    elif task_index is not None:
        options["task_index"] = task_index
    run = await drive_episode(env, openai_policy(client, model, **sampling), seed=seed, options=options)
    raw_at = dict(run.raw_replies)
    items: list[Any] = list(run.prompt)
    for i, message in enumerate(run.completion):
        # The policy's turn is kept as the model returned it (its tokens are what ART trains on).
        items.append(raw_at.get(i, message))
    if len(run.completion) in raw_at:
        # A reply the env could not take (it ended the episode, reward 0) is still the policy's to learn from.
        items.append(raw_at[len(run.completion)])
    reward_info = run.info.get("reward_info")
    metrics: dict[str, float | int | bool] = {"turns": int(run.info.get("turn", 0))}
    if reward_info is not None:
        metrics["shaped"] = float(reward_info.shaped)
        if reward_info.db_match is not None:
            metrics["db_match"] = bool(reward_info.db_match)
    metadata = {
        "task_id": str(run.info.get("task_id", "")),
        "termination": str(run.info.get("termination", "")),
        "seed": seed,
    }
    return art.Trajectory(
        messages_and_choices=items,
        tools=run.tools,
        reward=run.reward,
        metrics=metrics,
        metadata=metadata,
    )


async def art_group(
    make_env: Any, client: Any, model: str, *, task_id: str, n: int = 4, base_seed: int = 0, **sampling: Any
) -> Any:
    """``n`` rollouts of one task (seeds ``base_seed..base_seed+n-1``) as an ``art.TrajectoryGroup`` (for GRPO).

    Args:
        make_env: Zero-argument callable returning a fresh env per rollout.
        client: The policy's async client.
        model: Model name.
        task_id: The task.
        n: Group size.
        base_seed: First seed.
        **sampling: Extra request fields.

    """
    import asyncio

    art = _require_art()

    async def one(seed: int) -> Any:
        env = make_env()
        try:
            return await art_rollout(env, client, model, task_id=task_id, seed=seed, **sampling)
        finally:
            aclose = getattr(env, "aclose", None)  # a RemoteEnv frees its server session
            if aclose is not None:
                await aclose()

    return art.TrajectoryGroup(await asyncio.gather(*(one(base_seed + k) for k in range(n))))
