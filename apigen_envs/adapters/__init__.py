"""Adapters that let RL trainers drive apigen-envs: ``verifiers`` and OpenPipe ART.

Both share :func:`drive_episode`: one episode through the episode runner (:mod:`apigen_envs.runner`) in
which a policy (any OpenAI-compatible async client, as trainers hand out) plays the agent against a
:class:`~apigen_envs.env.ToolUseEnv` (or a :class:`~apigen_envs.remote.RemoteEnv`), with the domain's
verifier as the reward. Each raw model reply is kept next to the parsed action, so trainers can mark exactly
the policy's tokens as trainable. A reply that is no usable turn (an empty one, say) is not replaced by
anything: it ends the episode as ``invalid_action`` with reward 0, which is what the trainer should learn
from; a failure of the model server (``openai.APIError``) is an infrastructure failure (``agent_error``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from apigen_envs.episode import Episode
from apigen_envs.errors import LLMError
from apigen_envs.messages import AssistantMessage, Message, Usage
from apigen_envs.protocols import AgentContext
from apigen_envs.runner import arun_episode

PolicyCall = Callable[[list[dict[str, Any]], list[dict[str, Any]]], Awaitable[tuple[AssistantMessage, Any]]]
"""``(messages, tools) -> (parsed action, raw reply)``: one policy turn."""


@dataclass
class DrivenEpisode:
    """What :func:`drive_episode` produced.

    Attributes:
        prompt: System prompt and the user's opening message(s) (OpenAI dicts).
        completion: Every later message in order, policy turns as the env recorded them.
        raw_replies: ``(index in completion, raw reply)`` for each policy turn; a turn the env could not
            take (it ended the episode) has the index ``len(completion)``.
        reward: The verifier's reward (0.0 for an invalid or infrastructure-failed episode).
        info: The final info (``task_id``, ``turn``, ``termination``, ``reward_info``, ``error``).
        tools: The tool schemas offered to the policy.
        episode: The episode record.

    """

    prompt: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    completion: list[dict[str, Any]] = field(default_factory=list)
    raw_replies: list[tuple[int, Any]] = field(default_factory=list)
    reward: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    episode: Episode | None = None


def openai_policy(client: Any, model: str, **sampling: Any) -> PolicyCall:
    """A :data:`PolicyCall` on an ``openai.AsyncOpenAI``-style client (``client.chat.completions.create``).

    Tool calls written as text (small local models) are parsed the same way as by the project's own
    LLM client; the raw ``Choice`` is returned untouched for trainers that keep it.

    Args:
        client: The async client (``art.Model.openai_client()``, ``openai.AsyncOpenAI(...)``).
        model: Model name.
        **sampling: Extra request fields (temperature, max_tokens, seed...).

    """
    import openai

    from apigen_envs.llm import build_assistant_message

    async def call(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> tuple[AssistantMessage, Any]:
        try:
            response = await client.chat.completions.create(model=model, messages=messages, tools=tools, **sampling)
        except openai.APIError as exc:
            # The trainer's model server failed: infrastructure, not a turn of the policy.
            raise LLMError(f"the policy's model server failed: {type(exc).__name__}: {exc}") from exc
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


@dataclass
class _PolicyAgent:
    """The agent the runner drives: asks the policy call with the full prompt and keeps each raw reply."""

    policy: PolicyCall
    opening: int = 0
    raw_replies: list[tuple[int, Any]] = field(default_factory=list)
    name: str = "policy"

    async def aact(self, conversation: Sequence[Message], context: AgentContext) -> AssistantMessage:
        """One policy turn; the raw reply is filed under the index its turn takes in the completion."""
        if not self.raw_replies:
            self.opening = len(conversation)  # the customer's opening message(s) end the prompt
        messages = [{"role": "system", "content": context.system_prompt}, *(m.to_openai() for m in conversation)]
        action, raw = await self.policy(messages, list(context.tools))
        self.raw_replies.append((len(conversation) - self.opening, raw))
        return action

    def act(self, conversation: Sequence[Message], context: AgentContext) -> AssistantMessage:
        """The policy call is async only."""
        raise TypeError("drive_episode's policy is async; run it with the async runner")


async def drive_episode(
    env: Any,
    policy: PolicyCall,
    *,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
) -> DrivenEpisode:
    """Run one episode through the episode runner, with ``policy`` playing the agent.

    Args:
        env: A ToolUseEnv or RemoteEnv (``areset``/``astep``).
        policy: The policy turn function (see :func:`openai_policy`).
        seed: Episode seed.
        options: ``{"task_id": ...}`` or ``{"task_index": ...}``.

    Returns:
        The prompt, completion, raw replies, reward and episode.

    """
    agent = _PolicyAgent(policy)
    episode = await arun_episode(env, agent, options=options, seed=seed)
    messages = [m.to_openai() for m in episode.messages]
    opening = agent.opening or len(messages)
    prompt = [{"role": "system", "content": episode.system_prompt or ""}, *messages[:opening]]
    info = {
        "task_id": episode.task_id,
        "turn": episode.num_turns,
        "termination": episode.termination,
        "reward_info": episode.reward_info,
        "error": episode.error,
    }
    return DrivenEpisode(
        prompt=prompt,
        tools=list(episode.tools),
        completion=messages[opening:],
        raw_replies=list(agent.raw_replies),
        reward=float(episode.reward),
        info=info,
        episode=episode,
    )
