"""Adapters that let RL trainers drive apigen-envs: ``verifiers`` and OpenPipe ART.

Both share :func:`drive_episode`: an async loop in which a policy (any OpenAI-compatible async client,
as trainers hand out) plays the agent against a :class:`~apigen_envs.env.ToolUseEnv` (or a
:class:`~apigen_envs.remote.RemoteEnv`), with the domain's verifier as the reward. The loop keeps each
raw model reply next to the parsed action, so trainers can mark exactly the policy's tokens as trainable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from apigen_envs.messages import AssistantMessage, Usage

EMPTY_REPLY = "Sorry, could you say that again?"
"""Sent in place of an empty model reply, so a weak policy does not crash the episode."""

PolicyCall = Callable[[list[dict[str, Any]], list[dict[str, Any]]], Awaitable[tuple[AssistantMessage, Any]]]
"""``(messages, tools) -> (parsed action, raw reply)``: one policy turn."""


@dataclass
class DrivenEpisode:
    """What :func:`drive_episode` produced.

    Attributes:
        prompt: System prompt and the user's opening message(s) (OpenAI dicts).
        completion: Every later message in order, policy turns as the env recorded them.
        raw_replies: ``(index in completion, raw reply)`` for each policy turn.
        reward: The verifier's reward.
        info: The final step info (``reward_info``, ``termination``).
        tools: The tool schemas offered to the policy.

    """

    prompt: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    completion: list[dict[str, Any]] = field(default_factory=list)
    raw_replies: list[tuple[int, Any]] = field(default_factory=list)
    reward: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


def openai_policy(client: Any, model: str, **sampling: Any) -> PolicyCall:
    """A :data:`PolicyCall` on an ``openai.AsyncOpenAI``-style client (``client.chat.completions.create``).

    Tool calls written as text (small local models) are parsed the same way as by the project's own
    LLM client; the raw ``Choice`` is returned untouched for trainers that keep it.

    Args:
        client: The async client (``art.Model.openai_client()``, ``openai.AsyncOpenAI(...)``).
        model: Model name.
        **sampling: Extra request fields (temperature, max_tokens, seed...).

    """
    from apigen_envs.llm import build_assistant_message

    async def call(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> tuple[AssistantMessage, Any]:
        response = await client.chat.completions.create(model=model, messages=messages, tools=tools, **sampling)
        choice = response.choices[0]
        raw = choice.message
        calls = [tc.model_dump() if hasattr(tc, "model_dump") else dict(tc) for tc in (raw.tool_calls or ())]
        usage = getattr(response, "usage", None)
        used = Usage(
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
        )
        return build_assistant_message(raw.content, calls, tools, used), choice

    return call


async def drive_episode(
    env: Any,
    policy: PolicyCall,
    *,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
) -> DrivenEpisode:
    """Run one episode: reset, then policy turns until the env ends it.

    Args:
        env: A ToolUseEnv or RemoteEnv (``areset``/``astep``).
        policy: The policy turn function (see :func:`openai_policy`).
        seed: Episode seed.
        options: ``{"task_id": ...}`` or ``{"task_index": ...}``.

    Returns:
        The prompt, completion, raw replies and reward.

    """
    obs, info = await env.areset(seed=seed, options=options)
    tools = list(info["tools"])
    prompt = [{"role": "system", "content": info["system_prompt"]}, *obs]
    out = DrivenEpisode(prompt=prompt, tools=tools, info=info)
    seen = len(obs)
    while not env.done:
        action, raw = await policy(prompt + out.completion, tools)
        if action.is_empty:
            action = AssistantMessage(content=EMPTY_REPLY, usage=action.usage)
        obs, reward, _, _, info = await env.astep(action)
        out.raw_replies.append((len(out.completion), raw))
        out.completion.extend(obs[seen:])
        seen = len(obs)
        out.reward, out.info = float(reward), info
    return out
