"""An LLM-driven simulated customer with tau-bench's four user strategies.

The customer model sees our guidelines (``simulators/guidelines/*.md``) and the task's scenario as its
system prompt, and the conversation with roles flipped: the agent's text becomes the model's "user"
turns and the customer's earlier lines become its "assistant" turns; tool calls and results are hidden,
as a real customer never sees them.

Strategies:

* ``"llm"``: one call, the reply is the customer's line.
* ``"react"``: the model writes a private thought, then the line; only the line is said.
* ``"verify"``: a second call checks the line against the scenario; an inconsistent line is
  regenerated (with a new seed) up to ``max_checks`` times.
* ``"reflection"``: like ``verify``, but a rejected line is rewritten after reflecting on the
  reviewer's remarks instead of being sampled afresh.

The markers ``###STOP###``, ``###TRANSFER###`` and ``###OUT-OF-SCOPE###`` end the episode. A guard
fixes a defect seen in peer simulators: a customer who stops before the agent has said anything, or
right after confirming a request that the agent has not yet acted on, is made to continue instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

from apigen_envs.errors import DataFileError
from apigen_envs.llm import LLMClient, LLMRequest, Plan, arun_plan, run_plan
from apigen_envs.messages import AssistantMessage, Message, Usage, UserMessage
from apigen_envs.protocols import StopReason, UserTurn
from apigen_envs.task import Task

Strategy = Literal["llm", "react", "verify", "reflection"]
"""How the customer's lines are produced (see the module docstring)."""

GUIDELINES_DIR = Path(__file__).parent / "guidelines"

STOP_MARKERS: Mapping[str, StopReason] = MappingProxyType(
    {"###STOP###": "stop", "###TRANSFER###": "transfer", "###OUT-OF-SCOPE###": "out_of_scope"}
)
"""Marker written by the customer model -> why the conversation ends."""

# Lenient: small models write "### STOP ###", "###OUT_OF_SCOPE###" or lower case.
_MARKER_RE = re.compile(r"#{2,}\s*(STOP|TRANSFER|OUT[-_ ]?OF[-_ ]?SCOPE)\s*#{2,}", re.IGNORECASE)
_REASON_OF = MappingProxyType({"STOP": "stop", "TRANSFER": "transfer"})
_CONFIRM_RE = re.compile(
    r"^\W*(?:yes|yeah|yep|yup|sure|ok(?:ay)?|correct|confirm(?:ed)?|i confirm|please (?:go ahead|proceed|do)|"
    r"go ahead|proceed|that'?s (?:right|correct)|that is (?:right|correct)|absolutely|definitely|sounds good)\b",
    re.IGNORECASE,
)
_RESPONSE_RE = re.compile(r"(?:user\s+)?response\s*:\s*", re.IGNORECASE)
_THOUGHT_RE = re.compile(r"^\s*(?:thought|reflection)\s*:.*?(?:\n\s*\n|$)", re.IGNORECASE | re.DOTALL)
_VERDICT_RE = re.compile(r"verdict\s*:\s*\**\s*(consistent|inconsistent|yes|no|true|false)", re.IGNORECASE)

NUDGE = "Please go ahead with that now."
"""What the guard makes the customer say when it stops before the agent acted on a confirmation."""

OPENING_FALLBACK = "Hi, I need some help with a request."
"""Said when the model tries to stop before the conversation has started."""

REPEAT_FALLBACK = "Sorry, could you say that again?"
"""Said when the model returns an empty line without ending the conversation."""


def _read_guideline(directory: Path, name: str) -> str:
    path = directory / name
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read the user-simulator guideline ({exc.strerror or exc})") from None


def split_markers(text: str) -> tuple[str, StopReason | None]:
    """Remove stop markers from a customer line.

    Args:
        text: The model's line.

    Returns:
        ``(content, stop)``: the line without markers (stripped) and the first marker's reason, if any.

    """
    stop: StopReason | None = None
    match = _MARKER_RE.search(text)
    if match is not None:
        key = re.sub(r"[-_ ]", "", match.group(1).upper())
        stop = _REASON_OF.get(key, "out_of_scope")  # type: ignore[assignment]
    content = _MARKER_RE.sub("", text).strip()
    # A model that copies the transcript's speaker labels writes "Customer: ..."; the label is not speech.
    content = re.sub(r"^(?:customer|user)\s*:\s*", "", content, flags=re.IGNORECASE)
    return content, stop


def is_confirmation(text: str | None) -> bool:
    """Whether a customer line opens with a plain yes (``"Yes, please do"``, ``"Go ahead"``...)."""
    return bool(text) and bool(_CONFIRM_RE.match(text or ""))


def stop_guard(conversation: Sequence[Message], content: str, stop: StopReason | None) -> tuple[str, StopReason | None]:
    """Keep the customer from ending the conversation too early.

    A ``"stop"`` is turned into a continuing line when (a) the agent has not said anything yet, (b) the
    customer confirms the agent's question in the same breath (the agent must act on it first), or (c)
    the customer confirmed a request on the previous turn and the agent has made no tool call since.
    Each confirmation gets one nudge at most, so a stuck agent cannot keep the episode alive forever.

    Args:
        conversation: The conversation so far (agent's view).
        content: The customer line without markers.
        stop: The reason parsed from the markers.

    Returns:
        The possibly corrected ``(content, stop)``.

    """
    if stop != "stop":
        return content, stop
    if not any(isinstance(m, AssistantMessage) for m in conversation):
        return content or OPENING_FALLBACK, None
    last_user = None
    for index in range(len(conversation) - 1, -1, -1):
        if isinstance(conversation[index], UserMessage):
            last_user = index
            break
    acted = last_user is not None and any(
        isinstance(m, AssistantMessage) and m.tool_calls for m in conversation[last_user + 1 :]
    )
    previous = conversation[last_user].content if last_user is not None else None  # type: ignore[union-attr]
    pending = last_user is not None and is_confirmation(previous) and not acted
    if pending:
        if (previous or "").strip() == NUDGE:
            return content, stop  # already nudged once: let the customer go
        return NUDGE, None
    last_agent = next((m for m in reversed(conversation) if isinstance(m, AssistantMessage) and m.content), None)
    asked = last_agent is not None and (last_agent.content or "").rstrip().endswith("?")
    if content and asked and is_confirmation(content):
        return content, None
    return content, stop


AGENT_PREFIX = "Agent: "
"""Put before the agent's lines in the customer model's transcript."""


def flip_roles(conversation: Sequence[Message], greeting: str) -> list[dict[str, Any]]:
    """The conversation from the customer model's side: agent text -> "user", customer -> "assistant".

    Tool calls and tool results are left out. Consecutive turns of one side are merged, and the agent's
    greeting opens the transcript, so roles alternate as chat templates expect.

    Args:
        conversation: The conversation so far (agent's view).
        greeting: What the agent is taken to have said first.

    Returns:
        OpenAI chat messages (without the system prompt).

    """
    # "Agent: " marks whose words these are: small models otherwise mirror the greeting and play the agent.
    out: list[dict[str, Any]] = [{"role": "user", "content": f"{AGENT_PREFIX}{greeting}"}]
    for msg in conversation:
        if isinstance(msg, AssistantMessage) and msg.content and msg.content.strip():
            role, text = "user", f"{AGENT_PREFIX}{msg.content.strip()}"
        elif isinstance(msg, UserMessage) and msg.content.strip():
            role, text = "assistant", msg.content.strip()
        else:
            continue
        if out[-1]["role"] == role:
            out[-1] = {"role": role, "content": f"{out[-1]['content']}\n{text}"}
        else:
            out.append({"role": role, "content": text})
    return out


def scenario_text(task: Task) -> str:
    """The "Your situation" section built from a task's user scenario."""
    s = task.scenario
    parts = ["# Your situation", "", s.instruction.strip()]
    for title, value in (
        ("Who you are", s.persona),
        ("Why you are writing in", s.reason_for_call),
        ("What you know", s.known_info),
        ("What you do not know", s.unknown_info),
        ("How to go about it", s.task_instructions),
    ):
        if value and value.strip() and value.strip() not in s.instruction:
            parts += ["", f"## {title}", value.strip()]
    return "\n".join(parts)


def _transcript(flipped: Sequence[Mapping[str, Any]]) -> str:
    names = {"user": "Agent", "assistant": "Customer"}
    return "\n".join(f"{names[m['role']]}: {m['content']}" for m in flipped)


class LLMUser:
    """A simulated customer driven by an :class:`~apigen_envs.llm.LLMClient` (UserSimulator protocol).

    Stateless across calls and free of LLM calls at construction; ``seed`` is passed to every call
    (regenerations use ``seed + attempt``), and the tokens of all calls of a turn are summed on the
    returned :class:`UserTurn`.

    Args:
        client: The model client.
        strategy: ``"llm"``, ``"react"``, ``"verify"`` or ``"reflection"``.
        name: Name recorded on episodes.
        temperature: Sampling temperature (None uses the client's default).
        max_checks: Verification rounds for ``verify`` / ``reflection``.
        greeting: The agent's assumed first line, shown to the model before the customer's opening.
        guidelines_dir: Directory with ``user.md``, ``user_react.md``, ``user_verify.md`` and
            ``user_reflection.md``; defaults to the bundled guidelines.

    Raises:
        ValueError: For an unknown strategy or a negative ``max_checks``.
        DataFileError: When a guideline file cannot be read.

    """

    def __init__(
        self,
        client: LLMClient,
        strategy: Strategy = "llm",
        *,
        name: str = "llm_user",
        temperature: float | None = None,
        max_checks: int = 2,
        greeting: str = "Hi! How can I help you today?",
        guidelines_dir: Path | str | None = None,
    ) -> None:
        if strategy not in get_args(Strategy):
            raise ValueError(f"unknown user strategy {strategy!r}; choose one of {', '.join(get_args(Strategy))}")
        if max_checks < 0:
            raise ValueError("max_checks must be >= 0")
        self.client = client
        self.strategy = strategy
        self.name = name
        self.temperature = temperature
        self.max_checks = max_checks
        self.greeting = greeting
        directory = Path(guidelines_dir) if guidelines_dir is not None else GUIDELINES_DIR
        self._rules = _read_guideline(directory, "user.md")
        self._react = _read_guideline(directory, "user_react.md") if strategy == "react" else ""
        checking = strategy in ("verify", "reflection")
        self._verify = _read_guideline(directory, "user_verify.md") if checking else ""
        self._reflect = _read_guideline(directory, "user_reflection.md") if strategy == "reflection" else ""

    def __repr__(self) -> str:
        return f"LLMUser(strategy={self.strategy!r}, client={self.client!r})"

    def public(self) -> dict[str, Any]:
        """Settings to record on episodes (no secrets)."""
        config = getattr(self.client, "config", None)
        return {
            "name": self.name,
            "strategy": self.strategy,
            "temperature": self.temperature,
            "max_checks": self.max_checks,
            "llm": config.public() if hasattr(config, "public") else type(self.client).__name__,
        }

    def system_prompt(self, task: Task) -> str:
        """The customer model's system prompt for a task."""
        parts = [self._rules]
        if self._react:
            parts.append(self._react)
        parts.append(scenario_text(task))
        return "\n\n".join(parts)

    # ------------------------------------------------------------------ protocol
    def respond(self, task: Task, conversation: Sequence[Message], *, seed: int | None = None) -> UserTurn:
        """Produce the customer's next turn.

        Args:
            task: The task (its scenario drives the customer).
            conversation: The conversation so far (agent's view; tool messages are ignored).
            seed: Sampling seed passed to the client.

        Returns:
            The turn, with ``stop`` set when the customer ends the conversation.

        Raises:
            LLMError: When the client fails.

        """
        return run_plan(self.client, self.plan(task, conversation, seed=seed))

    async def arespond(self, task: Task, conversation: Sequence[Message], *, seed: int | None = None) -> UserTurn:
        """Async twin of :meth:`respond`."""
        return await arun_plan(self.client, self.plan(task, conversation, seed=seed))

    # ------------------------------------------------------------------ logic
    def plan(self, task: Task, conversation: Sequence[Message], *, seed: int | None = None) -> Plan[UserTurn]:
        """The turn as a plan of LLM requests (drive it with :func:`~apigen_envs.llm.run_plan`)."""
        usage = Usage()
        flipped = flip_roles(conversation, self.greeting)
        messages = [{"role": "system", "content": self.system_prompt(task)}, *flipped]

        def reseed(offset: int) -> int | None:
            return None if seed is None else seed + offset

        completion = yield LLMRequest(messages, seed=seed, temperature=self.temperature)
        usage = usage + completion.usage
        line = self._line(completion.message.content)
        if self.strategy in ("verify", "reflection"):
            for attempt in range(self.max_checks):
                verdict = yield LLMRequest(
                    self._verify_request(task, flipped, line), seed=reseed(attempt), temperature=0.0
                )
                usage = usage + verdict.usage
                remarks = verdict.message.content or ""
                if self._consistent(remarks):
                    break
                if self.strategy == "verify":
                    completion = yield LLMRequest(messages, seed=reseed(attempt + 1), temperature=self.temperature)
                    usage = usage + completion.usage
                    line = self._line(completion.message.content)
                else:
                    reflection = yield LLMRequest(
                        self._reflect_request(task, flipped, line, remarks),
                        seed=reseed(attempt + 1),
                        temperature=self.temperature,
                    )
                    usage = usage + reflection.usage
                    line = self._after_label(reflection.message.content or "")
        content, stop = split_markers(line)
        content, stop = stop_guard(conversation, content, stop)
        if not content and stop is None:
            content = REPEAT_FALLBACK
        return UserTurn(content=content, stop=stop, usage=usage)

    def _line(self, text: str | None) -> str:
        text = (text or "").strip()
        return self._after_label(text) if self.strategy == "react" else text

    @staticmethod
    def _after_label(text: str) -> str:
        """The part after the last "Response:" label, or the text without a leading thought."""
        matches = list(_RESPONSE_RE.finditer(text))
        if matches:
            return text[matches[-1].end() :].strip()
        return _THOUGHT_RE.sub("", text, count=1).strip() or text.strip()

    @staticmethod
    def _consistent(remarks: str) -> bool:
        verdicts = _VERDICT_RE.findall(remarks)
        if not verdicts:
            return True  # an unreadable review must not trigger endless regeneration
        return verdicts[-1].lower() in ("consistent", "yes", "true")

    def _verify_request(self, task: Task, flipped: Sequence[Mapping[str, Any]], line: str) -> list[dict[str, Any]]:
        body = (
            f"{scenario_text(task)}\n\n# Conversation so far\n{_transcript(flipped)}\n\n"
            f"# Proposed next customer message\n{line}"
        )
        return [{"role": "system", "content": self._verify}, {"role": "user", "content": body}]

    def _reflect_request(
        self, task: Task, flipped: Sequence[Mapping[str, Any]], line: str, remarks: str
    ) -> list[dict[str, Any]]:
        body = (
            f"{scenario_text(task)}\n\n# Conversation so far\n{_transcript(flipped)}\n\n"
            f"# Rejected customer message\n{line}\n\n# Reviewer's remarks\n{remarks.strip()}"
        )
        return [{"role": "system", "content": self._reflect}, {"role": "user", "content": body}]
