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

Every strategy opens the same way: the first line is written by a focused prompt from the scenario's
request (:func:`~apigen_envs.simulators.customer_lines.request_text`), checked to name the request and
not to speak as the agent, regenerated up to ``max_regenerations`` times, and else replaced by a plain
template (:func:`~apigen_envs.simulators.customer_lines.template_opening`). Every later line is checked
with :func:`~apigen_envs.simulators.customer_lines.role_confusion` (agent-speak, asking the agent for the
customer's details, apologising for lacking information, echoing the agent) and regenerated with a
reminder of the customer's role, then replaced by a fallback built from the scenario. What happened is
kept in the turn's ``meta`` (the episode's ``user_trace``).

The markers ``###STOP###``, ``###TRANSFER###`` and ``###OUT-OF-SCOPE###`` end the episode. A guard
fixes a defect seen in peer simulators: a customer who stops before the agent has said anything is made
to continue. With ``nudges`` on (the ``apigen`` profile's ``user_nudges``), a customer who stops right
after confirming an action the agent proposed, while the agent has neither acted nor refused, says
:data:`NUDGE` once instead; never after a refusal, after a question, or when nothing was proposed.
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
from apigen_envs.simulators.customer_lines import (
    customer_first_name,
    first_person,
    invented_details,
    names_request,
    request_text,
    role_confusion,
    template_opening,
)
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
# An agent line that proposes an action and asks for the go-ahead ("Shall I cancel it?", "Please confirm (yes/no).").
_PROPOSAL_RE = re.compile(
    r"\b(?:confirm|proceed|go ahead|shall i|should i|would you like me to|do you want me to|can i|may i|"
    r"want me to|ok(?:ay)? to|yes or no|yes/no|is that (?:right|correct|ok))\b",
    re.IGNORECASE,
)
# An agent line that refuses or cannot do what was asked: after it, a goodbye is a real goodbye.
_REFUSAL_RE = re.compile(
    r"\b(?:sorry|unfortunately|unable|not able|cannot|can'?t|not possible|not allowed|not eligible|"
    r"against (?:our|the) policy|i'?m afraid|won'?t be able)\b",
    re.IGNORECASE,
)
_ID_QUESTION_RE = re.compile(
    r"\b(?:name|e-?mail|zip|user id|user_id|identity|verify|authenticate|account|order id|order number|"
    r"reservation id|reservation number)\b",
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

ROLE_REMINDER = (
    "Reminder: you are the CUSTOMER, not the support agent. Do not offer help, do not ask the agent for "
    "anyone's details and do not apologise for missing information. Answer the agent's last message as the "
    "customer, in the first person, using only what your situation says."
)
"""System note added when a customer line was rejected as role confusion and is regenerated."""


def detail_reminder(invented: Sequence[str]) -> str:
    """System note for a line rejected because it made up identifiers (:func:`invented_details`)."""
    return (
        f"Reminder: you wrote {', '.join(invented)}, which your situation does not contain. Never make up an "
        "email, zip code, id or code: give only the details your situation states, or say you do not know them."
    )


OPENING_PROMPT = (
    "You are a customer starting a chat with a support agent. Write your first message to the agent: one or "
    "two short sentences in the first person (I, my) that say plainly what you want done, using the details "
    "given below. You are the customer, not the agent: do not offer help, do not ask for anyone's details, "
    "do not apologise. Write only the message, without quotes or labels."
)
"""System prompt of the opening-line request (the focused prompt)."""


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


def proposes_action(text: str | None) -> bool:
    """Whether an agent line asks the customer for the go-ahead on an action ("Shall I cancel it?")."""
    text = text or ""
    return bool(_PROPOSAL_RE.search(text)) and ("?" in text or "yes" in text.lower())


def is_refusal(text: str | None) -> bool:
    """Whether an agent line refuses or says it cannot do something ("Sorry, I can't cancel that.")."""
    return bool(text) and bool(_REFUSAL_RE.search(text or ""))


def stop_guard(
    conversation: Sequence[Message], content: str, stop: StopReason | None, *, nudges: bool = True
) -> tuple[str, StopReason | None]:
    """Keep the customer from ending the conversation too early.

    A ``"stop"`` is turned into a continuing line when (a) the agent has not said anything yet, (b) the
    customer confirms the agent's question in the same breath (the agent must act on it first), or (c),
    with ``nudges`` on, the customer's previous line confirmed an action the agent had proposed, the agent
    has made no tool call since and has not refused since: the customer then says :data:`NUDGE`. No nudge
    follows a refusal, a customer question or a confirmation of nothing proposed, and each confirmation
    gets one nudge at most, so a stuck agent cannot keep the episode alive forever.

    Args:
        conversation: The conversation so far (agent's view).
        content: The customer line without markers.
        stop: The reason parsed from the markers.
        nudges: Whether rule (c) applies (``Semantics.user_nudges``; off in the peer profiles).

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
    if nudges and last_user is not None and _nudge_due(conversation, last_user):
        return NUDGE, None
    last_agent = next((m for m in reversed(conversation) if isinstance(m, AssistantMessage) and m.content), None)
    asked = last_agent is not None and (last_agent.content or "").rstrip().endswith("?")
    if content and asked and is_confirmation(content):
        return content, None
    return content, stop


def _nudge_due(conversation: Sequence[Message], last_user: int) -> bool:
    """Rule (c) of :func:`stop_guard`: a confirmed proposal the agent neither acted on nor refused."""
    previous = conversation[last_user].content or ""  # type: ignore[union-attr]
    if previous.strip() == NUDGE or previous.rstrip().endswith("?") or not is_confirmation(previous):
        return False  # nudged once already, a question, or not a yes
    proposal = next(
        (m for m in reversed(conversation[:last_user]) if isinstance(m, AssistantMessage) and m.content), None
    )
    if proposal is None or not proposes_action(proposal.content):
        return False
    since = [m for m in conversation[last_user + 1 :] if isinstance(m, AssistantMessage)]
    if any(m.tool_calls for m in since):
        return False
    return not any(is_refusal(m.content) for m in since)


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


def _reseed(seed: int | None, offset: int) -> int | None:
    return None if seed is None else seed + offset


_PREAMBLE_RE = re.compile(
    r"^\s*(?:(?:sure|certainly|of course|okay|ok|absolutely)\b[,.!]?\s*)?"
    r"(?:here(?:'s| is) (?:the |my |a )?(?:first |opening )?(?:customer'?s? )?(?:message|reply|response)\b[^:\n]{0,40}:"
    r"|(?:message|first message|customer message)\s*:)\s*",
    re.IGNORECASE,
)


def _unquote(text: str) -> str:
    """A line without the quotes or label a model may wrap it in.

    ``"Hi, ..."``, ``Message: ...`` and ``Sure, here's the first message: "..."`` all give the message itself.
    """
    text = _PREAMBLE_RE.sub("", text.strip(), count=1)
    if len(text) >= 2 and text[0] in "\"'“" and text[-1] in "\"'”":
        text = text[1:-1].strip()
    return text


# An email ends at its last name part, so a sentence's full stop is not taken for part of it.
_DETAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+|#?[A-Z]{1,2}\d{5,}|\b\d{5}\b|\b[a-z]+_[a-z]+_\d+\b")


def _identity_question(conversation: Sequence[Message]) -> bool:
    """Whether the agent's last line is a question asking who the customer is (not an action proposal)."""
    last_agent = next((m for m in reversed(conversation) if isinstance(m, AssistantMessage) and m.content), None)
    text = (last_agent.content or "").rstrip() if last_agent is not None else ""
    return text.endswith("?") and bool(_ID_QUESTION_RE.search(text)) and not proposes_action(text)


def _withholds_identity(task: Task, conversation: Sequence[Message], line: str) -> bool:
    """Whether the agent just asked who the customer is and the line gives none of it.

    Only when the scenario states identifying details (an email, a zip code, a user or order id): a reply
    holding none of them, nor the customer's first name, nor a "don't know / remember", does not answer
    the question. Small models reply "Yes.", restate the request, or refuse ("I cannot provide my
    details"); the agent then cannot go on.
    """
    if not _identity_question(conversation):
        return False
    known = task.scenario.known_info or ""
    details = {d.lower().lstrip("#") for d in _DETAIL_RE.findall(known)}
    if not details:
        return False
    name = customer_first_name(task)
    if name:
        details.add(name.lower())
    lowered = line.lower()
    if re.search(r"\b(?:don'?t|do not|can'?t|cannot) (?:know|remember|recall|have|find)\b|\bforg[eo]t", lowered):
        return False
    return not any(d in lowered for d in details)


def _asked_identity(conversation: Sequence[Message]) -> bool:
    """Whether the agent's last line asks who the customer is, before the agent has called any tool.

    Ending the conversation there is never the customer's business done: nothing has been looked up yet
    (small models answer such a question with the stop marker alone).
    """
    if any(isinstance(m, AssistantMessage) and m.tool_calls for m in conversation):
        return False
    return _identity_question(conversation)


def fallback_line(task: Task, conversation: Sequence[Message]) -> str:
    """A safe customer line built from the scenario, used when every sample was role confusion.

    When the agent's last line asks for identifying details, the customer's known info in the first
    person; otherwise the request restated.

    Args:
        task: The task.
        conversation: The conversation so far.

    Returns:
        The line.

    """
    last_agent = next((m for m in reversed(conversation) if isinstance(m, AssistantMessage) and m.content), None)
    known = task.scenario.known_info
    if last_agent is not None and known and known.strip() and _ID_QUESTION_RE.search(last_agent.content or ""):
        return first_person(" ".join(known.split()))
    request = first_person(request_text(task)).strip()
    if not request:
        return REPEAT_FALLBACK
    return f"To repeat what I need: {request[0].lower() + request[1:] if request[:2] != 'I ' else request}"


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
        nudges: Whether the stop guard may nudge an agent that did not act on a confirmed proposal
            (``Semantics.user_nudges``: on in ``apigen``, off in the peer profiles).
        max_regenerations: New samples of a line rejected as role confusion (or of an opening that does
            not name the request) before the fallback line is used.
        guidelines_dir: Directory with ``user.md``, ``user_react.md``, ``user_verify.md`` and
            ``user_reflection.md``; defaults to the bundled guidelines.

    Raises:
        ValueError: For an unknown strategy or a negative ``max_checks`` / ``max_regenerations``.
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
        nudges: bool = True,
        max_regenerations: int = 2,
        guidelines_dir: Path | str | None = None,
    ) -> None:
        if strategy not in get_args(Strategy):
            raise ValueError(f"unknown user strategy {strategy!r}; choose one of {', '.join(get_args(Strategy))}")
        if max_checks < 0:
            raise ValueError("max_checks must be >= 0")
        if max_regenerations < 0:
            raise ValueError("max_regenerations must be >= 0")
        self.client = client
        self.strategy = strategy
        self.name = name
        self.temperature = temperature
        self.max_checks = max_checks
        self.greeting = greeting
        self.nudges = nudges
        self.max_regenerations = max_regenerations
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
            "nudges": self.nudges,
            "max_regenerations": self.max_regenerations,
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
        if not any(isinstance(m, UserMessage) for m in conversation):
            return (yield from self.opening_plan(task, seed=seed))
        usage = Usage()
        flipped = flip_roles(conversation, self.greeting)
        messages = [{"role": "system", "content": self.system_prompt(task)}, *flipped]
        agent_lines = [m.content for m in conversation if isinstance(m, AssistantMessage) and m.content][-2:]
        # What the customer has heard or said (not tool results: only the agent sees those).
        heard = [m.content for m in conversation if isinstance(m, UserMessage | AssistantMessage) and m.content]
        rejected: list[dict[str, Any]] = []
        content, stop = "", None
        reminder = ROLE_REMINDER
        for attempt in range(self.max_regenerations + 1):
            # A regeneration gets a new seed and a reminder; the first sample uses the episode seed.
            request = messages if attempt == 0 else [*messages, {"role": "system", "content": reminder}]
            line, spent = yield from self._sample(task, request, flipped, _reseed(seed, 100 * attempt))
            usage = usage + spent
            content, stop = split_markers(line)
            confusion = role_confusion(content, agent_lines, customer_first_name(task))
            if confusion is None and stop is None and content and _withholds_identity(task, conversation, content):
                confusion = "no_identity_given"
            if confusion is None and stop == "stop" and _asked_identity(conversation):
                confusion = "stops_at_identity_question"
            invented = invented_details(content, task, heard) if confusion is None else []
            if invented:
                confusion, reminder = "invents_detail", detail_reminder(invented)
            else:
                reminder = ROLE_REMINDER
            if confusion is None:
                break
            rejected.append({"line": content, "why": confusion})
        else:
            content, stop = fallback_line(task, conversation), None
        content, stop = stop_guard(conversation, content, stop, nudges=self.nudges)
        if not content and stop is None:
            content = REPEAT_FALLBACK
        meta = {"rejected": rejected, "fallback": len(rejected) > self.max_regenerations} if rejected else None
        return UserTurn(content=content, stop=stop, usage=usage, meta=meta)

    def _sample(
        self,
        task: Task,
        messages: list[dict[str, Any]],
        flipped: Sequence[Mapping[str, Any]],
        seed: int | None,
    ) -> Plan[tuple[str, Usage]]:
        """One candidate line under the strategy (with its verify / reflection rounds) and its tokens."""
        usage = Usage()
        completion = yield LLMRequest(messages, seed=seed, temperature=self.temperature)
        usage = usage + completion.usage
        line = self._line(completion.message.content)
        if self.strategy in ("verify", "reflection"):
            for attempt in range(self.max_checks):
                verdict = yield LLMRequest(
                    self._verify_request(task, flipped, line), seed=_reseed(seed, attempt), temperature=0.0
                )
                usage = usage + verdict.usage
                remarks = verdict.message.content or ""
                if self._consistent(remarks):
                    break
                if self.strategy == "verify":
                    completion = yield LLMRequest(
                        messages, seed=_reseed(seed, attempt + 1), temperature=self.temperature
                    )
                    usage = usage + completion.usage
                    line = self._line(completion.message.content)
                else:
                    reflection = yield LLMRequest(
                        self._reflect_request(task, flipped, line, remarks),
                        seed=_reseed(seed, attempt + 1),
                        temperature=self.temperature,
                    )
                    usage = usage + reflection.usage
                    line = self._after_label(reflection.message.content or "")
        return line, usage

    def opening_messages(self, task: Task) -> list[dict[str, Any]]:
        """The focused request for the opening line: the request and manner, nothing else."""
        body = [f"What you want: {first_person(request_text(task)) or 'help with a request'}"]
        persona = task.scenario.persona
        if persona and persona.strip():
            body.append(f"Your manner: {first_person(persona.strip())}")
        body.append("Write your first message to the agent.")
        return [{"role": "system", "content": OPENING_PROMPT}, {"role": "user", "content": "\n".join(body)}]

    def opening_plan(self, task: Task, *, seed: int | None = None) -> Plan[UserTurn]:
        """The customer's first line: the focused prompt, checked, regenerated, else the template.

        A sample is kept when it names the request (:func:`names_request`), is not role confusion and
        does not end the conversation; the turn's ``meta`` says ``"opening": "model"`` or
        ``"template"`` and lists rejected samples.
        """
        usage = Usage()
        rejected: list[dict[str, Any]] = []
        messages = self.opening_messages(task)
        for attempt in range(self.max_regenerations + 1):
            completion = yield LLMRequest(messages, seed=_reseed(seed, 100 * attempt), temperature=self.temperature)
            usage = usage + completion.usage
            content, stop = split_markers(_unquote(completion.message.content or ""))
            confusion = role_confusion(content, name=customer_first_name(task), opening=True) if content else "empty"
            if confusion is None and invented_details(content, task):
                confusion = "invents_detail"
            if confusion is None and stop is None and names_request(content, task):
                return UserTurn(content=content, usage=usage, meta={"opening": "model", "rejected": rejected})
            rejected.append({"line": content, "why": confusion or ("stop" if stop else "request_not_named")})
        return UserTurn(content=template_opening(task), usage=usage, meta={"opening": "template", "rejected": rejected})

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
