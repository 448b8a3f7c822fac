"""Trainer samples: an Episode as chat messages, tool schemas, reward and a per-message policy mask.

:func:`to_trainer_sample` turns an Episode into OpenAI chat messages (system prompt first), the tool schemas,
the reward and a per-message ``policy_mask``; token ids and logprobs the policy sampled are passed through
untouched. Given any tokenizer with a chat template, :func:`tokenize_sample` builds ``input_ids`` and a
token-level ``assistant_mask`` by incremental templating (see its docstring).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from apigen_envs.episode import Episode
from apigen_envs.messages import AssistantMessage
from apigen_envs.rl.rewards import RewardMode, episode_reward


class TrainerSample(BaseModel):
    """One episode as a trainer consumes it.

    All per-message lists are aligned with ``messages``.

    Attributes:
        messages: OpenAI chat-format messages, the system prompt first (unless left out).
        tools: OpenAI tool schemas offered to the policy.
        reward: The training reward (see ``reward_mode``).
        reward_mode: ``"binary"`` or ``"shaped"``.
        advantage: The group advantage, when the sample came from a group.
        policy_mask: True for assistant messages the policy produced; False for system, user and tool.
        token_ids: Per message, the token ids the policy sampled (None where not recorded).
        logprobs: Per message, the sampled tokens' logprobs (None where not recorded).
        episode_id: The episode id.
        task_id: The task id.
        trial: Trial index.
        seed: Episode seed.
        termination: Why the episode ended.
        reward_info: The verifier's breakdown as a dict (None when not scored).

    """

    model_config = ConfigDict(frozen=True)

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = Field(default_factory=list)
    reward: float
    reward_mode: RewardMode = "binary"
    advantage: float | None = None
    policy_mask: list[bool]
    token_ids: list[list[int] | None]
    logprobs: list[list[float] | None]
    episode_id: str = ""
    task_id: str = ""
    trial: int = 0
    seed: int | None = None
    termination: str | None = None
    reward_info: dict[str, Any] | None = None


def to_trainer_sample(
    episode: Episode,
    reward_mode: RewardMode = "binary",
    *,
    advantage: float | None = None,
    include_system: bool = True,
) -> TrainerSample:
    """Turn an episode into chat messages, tool schemas, reward and a per-message policy mask.

    Assistant messages that carry ``token_ids`` / ``logprobs`` (set by a policy that samples tokens
    itself) pass them through, so a trainer never re-tokenises what the policy generated.

    Args:
        episode: The episode.
        reward_mode: ``"binary"`` (verifier) or ``"shaped"`` (``RewardInfo.shaped``, shaping only).
        advantage: A group advantage to attach.
        include_system: Put the system prompt first (the policy saw it).

    Returns:
        The sample.

    Raises:
        ValueError: On an unknown reward mode.

    """
    reward = episode_reward(episode, reward_mode)
    messages: list[dict[str, Any]] = []
    mask: list[bool] = []
    token_ids: list[list[int] | None] = []
    logprobs: list[list[float] | None] = []
    if include_system and episode.system_prompt:
        messages.append({"role": "system", "content": episode.system_prompt})
        mask.append(False)
        token_ids.append(None)
        logprobs.append(None)
    for msg in episode.messages:
        messages.append(msg.to_openai())
        is_policy = isinstance(msg, AssistantMessage)
        mask.append(is_policy)
        ids = msg.token_ids if is_policy else None  # type: ignore[union-attr]
        lps = msg.logprobs if is_policy else None  # type: ignore[union-attr]
        token_ids.append(list(ids) if ids is not None else None)
        logprobs.append(list(lps) if lps is not None else None)
    return TrainerSample(
        messages=messages,
        tools=list(episode.tools),
        reward=reward,
        reward_mode=reward_mode,
        advantage=advantage,
        policy_mask=mask,
        token_ids=token_ids,
        logprobs=logprobs,
        episode_id=episode.episode_id,
        task_id=episode.task_id,
        trial=episode.trial,
        seed=episode.seed,
        termination=episode.termination,
        reward_info=episode.reward_info.model_dump() if episode.reward_info is not None else None,
    )


class ChatTemplateError(ValueError):
    """The tokenizer's chat template cannot be split into per-message segments."""


@dataclass(frozen=True)
class TokenizedSample:
    """A conversation as token ids with a token-level mask of what the policy produced.

    Attributes:
        input_ids: The token ids of the whole templated conversation.
        assistant_mask: Per token, True where the policy produced it (assistant message bodies).
        logprobs: Per token, the sampled logprob (0.0 elsewhere); None unless every policy message
            carried logprobs.
        spans: Per message, the ``(start, end)`` token range it occupies (assistant headers such as
            ``<|im_start|>assistant`` belong to the message's span but are not masked).

    """

    input_ids: list[int]
    assistant_mask: list[bool]
    logprobs: list[float] | None
    spans: list[tuple[int, int]]


def _render(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None,
    generation_prompt: bool,
    kwargs: Mapping[str, Any],
) -> str:
    if not messages:
        return ""
    text = tokenizer.apply_chat_template(
        [dict(m) for m in messages],
        tools=list(tools) if tools else None,
        add_generation_prompt=generation_prompt,
        tokenize=False,
        **kwargs,
    )
    if not isinstance(text, str):
        raise ChatTemplateError(f"apply_chat_template(tokenize=False) returned {type(text).__name__}, not text")
    return text


def _encode(tokenizer: Any, text: str) -> list[int]:
    if not text:
        return []
    return list(tokenizer.encode(text, add_special_tokens=False))


def _suffix(longer: str, prefix: str, index: int, what: str) -> str:
    if not longer.startswith(prefix):
        raise ChatTemplateError(
            f"the chat template is not prefix-stable at message {index} ({what}): rendering more messages "
            "changed the text of earlier ones (templates that rewrite past turns, e.g. drop earlier "
            "reasoning, need one tokenisation per assistant turn instead)"
        )
    return longer[len(prefix) :]


def tokenize_sample(
    sample: TrainerSample | Sequence[Mapping[str, Any]],
    tokenizer: Any,
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    policy_mask: Sequence[bool] | None = None,
    token_ids: Sequence[Sequence[int] | None] | None = None,
    logprobs: Sequence[Sequence[float] | None] | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> TokenizedSample:
    """Token ids and a token-level assistant mask, by incremental chat templating.

    Works with any tokenizer that has ``apply_chat_template(messages, tools=..., add_generation_prompt=...,
    tokenize=False)`` and ``encode(text, add_special_tokens=False)`` (every Hugging Face tokenizer with
    a chat template). The approach:

    1. Render growing prefixes of the conversation as text: ``T(k)`` is the template of the first k
       messages, and ``T+(k)`` the same with the generation prompt (the assistant header) added.
    2. Message k's text is the difference ``T(k+1) - T(k)``. For an assistant message it is split into the
       header ``T+(k) - T(k)`` (not the policy's, mask False) and the body ``T(k+1) - T+(k)`` (the policy's,
       mask True, including the end-of-turn marker the model must learn to emit).
    3. Each piece is tokenised on its own and the pieces are concatenated. Pieces meet at template
       markers, so this matches tokenising the whole text for usual templates, and the prompt prefix of
       every assistant turn is exactly what the model saw at sampling time.
    4. When an assistant message carries the ``token_ids`` the policy sampled, they replace the body's
       tokens (nothing is re-tokenised); template text after the decoded ids (such as the newline after
       ``<|im_end|>``) is added unmasked when it can be identified.

    A template that is not prefix-stable (it rewrites earlier turns as the conversation grows) raises
    :class:`ChatTemplateError` naming the message.

    Args:
        sample: A :class:`TrainerSample` or a list of OpenAI chat messages.
        tokenizer: The tokenizer.
        tools: Tool schemas for the template (default: the sample's).
        policy_mask: Per message, whether the policy produced it (default: the sample's, else assistant
            messages).
        token_ids: Per message, sampled token ids (default: the sample's).
        logprobs: Per message, sampled logprobs (default: the sample's).
        chat_template_kwargs: Extra keyword arguments for ``apply_chat_template``.

    Returns:
        The tokenised conversation.

    Raises:
        ChatTemplateError: When the template cannot be split per message.
        ValueError: When per-message lists do not match the messages.

    """
    if isinstance(sample, TrainerSample):
        messages: list[Mapping[str, Any]] = list(sample.messages)
        tools = sample.tools if tools is None else tools
        policy_mask = sample.policy_mask if policy_mask is None else policy_mask
        token_ids = sample.token_ids if token_ids is None else token_ids
        logprobs = sample.logprobs if logprobs is None else logprobs
    else:
        messages = list(sample)
    n = len(messages)
    mask_in = list(policy_mask) if policy_mask is not None else [m.get("role") == "assistant" for m in messages]
    ids_in = list(token_ids) if token_ids is not None else [None] * n
    lps_in = list(logprobs) if logprobs is not None else [None] * n
    for name, values in (("policy_mask", mask_in), ("token_ids", ids_in), ("logprobs", lps_in)):
        if len(values) != n:
            raise ValueError(f"{name} has {len(values)} entries for {n} messages")
    kwargs = dict(chat_template_kwargs or {})
    input_ids: list[int] = []
    assistant_mask: list[bool] = []
    token_logprobs: list[float] = []
    spans: list[tuple[int, int]] = []
    have_logprobs = any(mask_in)

    def emit(ids: Sequence[int], produced: bool, lps: Sequence[float] | None = None) -> None:
        input_ids.extend(ids)
        assistant_mask.extend([produced] * len(ids))
        token_logprobs.extend(lps if lps is not None else [0.0] * len(ids))

    previous = ""
    for k, message in enumerate(messages):
        start = len(input_ids)
        full = _render(tokenizer, messages[: k + 1], tools, False, kwargs)
        if message.get("role") == "assistant":
            with_header = _render(tokenizer, messages[:k], tools, True, kwargs) if k else ""
            header = _suffix(with_header, previous, k, "generation prompt") if k else ""
            body = _suffix(full, with_header, k, "assistant message")
            emit(_encode(tokenizer, header), False)
            produced = bool(mask_in[k])
            ids, lps = ids_in[k], lps_in[k]
            if lps is not None and ids is not None and len(lps) != len(ids):
                raise ValueError(f"message {k}: {len(lps)} logprobs for {len(ids)} token ids")
            if ids is not None:
                emit(list(ids), produced, list(lps) if lps is not None else None)
                decoded = (
                    tokenizer.decode(list(ids), skip_special_tokens=False) if hasattr(tokenizer, "decode") else None
                )
                if isinstance(decoded, str) and decoded and body.startswith(decoded):
                    emit(_encode(tokenizer, body[len(decoded) :]), False)
            else:
                emit(_encode(tokenizer, body), produced)
            if produced and (lps is None or ids is None):
                have_logprobs = False
        else:
            emit(_encode(tokenizer, _suffix(full, previous, k, "message")), bool(mask_in[k]))
        previous = full
        spans.append((start, len(input_ids)))
    return TokenizedSample(
        input_ids=input_ids,
        assistant_mask=assistant_mask,
        logprobs=token_logprobs if have_logprobs else None,
        spans=spans,
    )
