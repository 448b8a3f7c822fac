"""ToolUseEnv: a Gymnasium env where an agent serves a simulated user through tool calls.

One step machine serves both the sync Gymnasium API (``reset``/``step``) and the async one
(``areset``/``astep``); only the user-simulator call differs (called vs awaited), so thousands of async
episodes can wait on an LLM server at once while sharing all other logic.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding

from apigen_envs._version import __version__
from apigen_envs.domain import Domain
from apigen_envs.episode import UNSCORED_TERMINATIONS, Episode, Termination
from apigen_envs.errors import DomainNotFoundError, EnvBugError, EnvStateError, did_you_mean
from apigen_envs.messages import (
    AssistantMessage,
    Message,
    ToolCall,
    ToolMessage,
    Usage,
    UserMessage,
    to_assistant_message,
)
from apigen_envs.protocols import UserSimulator, UserTurn
from apigen_envs.registry import BUILTIN_DOMAINS, GYM_IDS, load_domain, register_envs
from apigen_envs.spaces import AssistantActionSpace, MessagesSpace
from apigen_envs.task import Task
from apigen_envs.tools import execute
from apigen_envs.verify import RewardInfo

Observation = tuple[dict[str, Any], ...]


class ToolUseEnv(gym.Env[Observation, dict[str, Any]]):
    """A multi-turn tool-use episode over one task of a domain.

    Observations are the conversation so far as OpenAI-format dicts (without the system prompt, which is
    in ``info["system_prompt"]`` with the tool schemas in ``info["tools"]``). An action is one assistant
    turn: tool calls are executed against the episode's copy-on-write DB view; text goes to the user
    simulator, whose reply is appended. The episode ends when the user stops or transfers, a terminal tool
    is called, or ``max_turns`` agent steps have been taken (truncated: reward 0, as both peers score an
    episode that neither side ended; the breakdown is still reported). The reward, given at the end, is
    the verifier's (1.0 or 0.0), with its breakdown in ``info["reward_info"]``. Tools, reward and output
    matching follow the domain's semantics profile (``info["semantics"]``).

    Args:
        domain: A :class:`Domain` or a domain name (``"retail"``, ``"airline"``, ``"mock"``, or
            ``"package.module:loader"``).
        user: The user simulator; defaults to a deterministic scripted user answering from the task.
        split: Restrict tasks to one split.
        task_ids: Restrict tasks to these ids.
        max_turns: Agent steps before truncation.
        strict: Re-raise unexpected tool exceptions (env bugs) instead of ending the episode.
        data_dir: Load the domain from this directory (tau2 or tau-bench layout).
        semantics: Force a semantics profile (a name such as ``"tau2"``, a label such as
            ``"tau2+seat_accounting"``, or a :class:`~apigen_envs.semantics.Semantics`) when ``domain`` is
            a name; default: the data's own.
        render_mode: ``"ansi"`` for a text transcript from ``render()``.

    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        domain: Domain | str = "mock",
        *,
        user: UserSimulator | None = None,
        split: str | None = None,
        task_ids: Sequence[str] | None = None,
        max_turns: int = 30,
        strict: bool = False,
        data_dir: str | Path | None = None,
        semantics: Any = None,
        render_mode: str | None = None,
    ) -> None:
        if isinstance(domain, Domain):
            if semantics is not None and getattr(semantics, "label", semantics) != domain.semantics.label:
                raise ValueError("semantics can only be chosen when the domain is given by name")
            self.domain = domain
        else:
            self.domain = load_domain(domain, data_dir, semantics)
        if user is None:
            from apigen_envs.simulators.scripted_user import ScriptedUser

            user = ScriptedUser()
        self.user = user
        if task_ids is not None:
            self.tasks = tuple(self.domain.task(t) for t in task_ids)
        else:
            self.tasks = self.domain.task_list(split)
        if not self.tasks:
            raise ValueError(f"domain {self.domain.name!r} has no tasks for split={split!r}")
        if max_turns < 1:
            raise ValueError("max_turns must be >= 1")
        if render_mode not in (None, "ansi"):
            raise ValueError(f"unsupported render_mode {render_mode!r}; use 'ansi'")
        self.max_turns = max_turns
        self.strict = strict
        self.render_mode = render_mode
        self.observation_space = MessagesSpace()
        self.action_space = AssistantActionSpace(self.domain.tools.names)
        self._task: Task | None = None
        self._view: Any = None
        self._messages: list[Message] = []
        self._obs: list[dict[str, Any]] = []
        self._turn = 0
        self._done = False
        self._truncated = False
        self._termination: Termination | None = None
        self._error: str | None = None
        self._reward_info: RewardInfo | None = None
        self._seed: int | None = None
        self._user_usage = Usage()
        self._user_trace: list[dict[str, Any]] = []
        self._started = 0.0
        self._pending_seed: int | None = None

    # ----------------------------------------------------------------- public state
    @property
    def np_random(self) -> np.random.Generator:
        """The env's RNG, seeded by the last ``reset(seed=...)`` (created on first use)."""
        if self._np_random is None:
            self._np_random, self._np_random_seed = seeding.np_random(self._pending_seed)
            self._pending_seed = None
        return self._np_random

    @np_random.setter
    def np_random(self, value: np.random.Generator) -> None:
        self._np_random, self._np_random_seed, self._pending_seed = value, -1, None

    @property
    def np_random_seed(self) -> int:
        """The seed of :attr:`np_random` (-1 when set directly)."""
        if self._np_random_seed is None:
            self.np_random  # noqa: B018 - creating the RNG sets its seed
        return self._np_random_seed  # type: ignore[return-value]

    @property
    def task(self) -> Task:
        """The current task (after ``reset``)."""
        if self._task is None:
            raise EnvStateError("call reset() first")
        return self._task

    @property
    def view(self) -> Any:
        """The episode's DB view (after ``reset``)."""
        if self._view is None:
            raise EnvStateError("call reset() first")
        return self._view

    @property
    def messages(self) -> tuple[Message, ...]:
        """The conversation so far as typed messages."""
        return tuple(self._messages)

    @property
    def done(self) -> bool:
        """Whether the episode has ended (terminated or truncated)."""
        return self._done

    @property
    def termination(self) -> Termination | None:
        """Why the episode ended, once it has."""
        return self._termination

    @property
    def reward_info(self) -> RewardInfo | None:
        """The final reward breakdown, once the episode has ended."""
        return self._reward_info

    @property
    def system_prompt(self) -> str:
        """The agent's system prompt (the domain policy)."""
        return self.domain.system_prompt()

    @property
    def tool_schemas(self) -> tuple[dict[str, Any], ...]:
        """OpenAI schemas of the tools."""
        return self.domain.tools.schemas()

    # ----------------------------------------------------------------- reset
    def _begin_reset(self, seed: int | None, options: dict[str, Any] | None) -> None:
        options = options or {}
        unknown = set(options) - {"task_id", "task_index"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; use 'task_id' or 'task_index'")
        # Resolve a requested task before touching any state, so a bad id leaves the env as it was.
        task: Task | None = None
        if "task_id" in options:
            task = self.domain.task(str(options["task_id"]))
        elif "task_index" in options:
            index = int(options["task_index"])
            if not 0 <= index < len(self.tasks):
                raise IndexError(f"task_index {index} out of range [0, {len(self.tasks)})")
            task = self.tasks[index]
        if seed is not None:
            if task is not None:
                # No draw needs the RNG now: seed it on first use (saves ~10 us a reset).
                self._np_random, self._np_random_seed, self._pending_seed = None, seed, seed
            else:
                super().reset(seed=seed)
        self._seed = seed
        if task is None:
            task = self.tasks[int(self.np_random.integers(len(self.tasks)))]
        self._task = task
        self._view = self.domain.snapshot.view()
        self._messages = []
        self._obs = []
        self._turn = 0
        self._done = False
        self._truncated = False
        self._termination = None
        self._error = None
        self._reward_info = None
        self._user_usage = Usage()
        self._user_trace = []
        self._started = time.perf_counter()

    def _reset_result(self) -> tuple[Observation, dict[str, Any]]:
        task = self.task
        info = {
            "task_id": task.id,
            "domain": self.domain.name,
            "tools": list(self.tool_schemas),
            "system_prompt": self.system_prompt,
            "semantics": self.domain.semantics.label,
            "turn": 0,
        }
        if self._done:
            info.update(self._final_info())
        return self._observation(), info

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Observation, dict[str, Any]]:
        """Start an episode and return the user's opening message.

        Args:
            seed: Seeds task choice and the user simulator.
            options: ``{"task_id": str}`` or ``{"task_index": int}`` picks the task; otherwise it is drawn
                uniformly with the env's RNG.

        Returns:
            (observation, info).

        """
        self._begin_reset(seed, options)
        self._accept_user(self._user_call_sync)
        return self._reset_result()

    async def areset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Observation, dict[str, Any]]:
        """Async twin of :meth:`reset` (the user simulator call is awaited)."""
        self._begin_reset(seed, options)
        await self._accept_user_async()
        return self._reset_result()

    # ----------------------------------------------------------------- step
    def _begin_step(self, action: Any) -> bool:
        """Validate and apply an agent turn. Returns True when the user simulator must answer."""
        if self._task is None:
            raise EnvStateError("step() called before reset()")
        if self._done:
            raise EnvStateError("the episode has ended; call reset() to start a new one")
        msg = to_assistant_message(action)
        self._append(msg)
        self._turn += 1
        if msg.tool_calls:
            for call in msg.tool_calls:
                self._execute(call)
                if self._done:
                    break
            return False
        return True

    def _execute(self, call: ToolCall) -> None:
        outcome = execute(
            self.domain.tools, self._view, call.name, call.arguments, atomic=self.domain.semantics.atomic_calls
        )
        # Built from the validated call and our own output: no validation pass, and the OpenAI dict directly.
        message = ToolMessage.of_call(call, outcome.content, outcome.error)
        self._messages.append(message)
        self._obs.append(
            {"role": "tool", "tool_call_id": message.tool_call_id, "name": message.name, "content": message.content}
        )
        if outcome.bug is not None:
            if self.strict:
                raise EnvBugError(outcome.bug)
            self._error = outcome.bug
            self._finish("env_error")
        elif (
            outcome.tool is not None
            and outcome.tool.terminal
            # tau-bench ends the episode on any call of a terminal tool; tau2 and we only on a successful one.
            and (not outcome.error or self.domain.semantics.tools_of == "tau-bench")
        ):
            self._finish("terminal_tool")

    def _end_step(self) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        if not self._done and self._turn >= self.max_turns:
            self._truncated = True
            self._finish("max_turns")
        info: dict[str, Any] = {"task_id": self.task.id, "turn": self._turn}
        reward = 0.0
        if self._done:
            info.update(self._final_info())
            reward = self._reward_info.reward if self._reward_info else 0.0
        terminated = self._done and not self._truncated
        return self._observation(), reward, terminated, self._truncated, info

    def step(self, action: Any) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        """Take one agent turn.

        Args:
            action: An :class:`AssistantMessage`, an OpenAI assistant dict, or a str (text to the user).

        Returns:
            (observation, reward, terminated, truncated, info). Reward is non-zero only at the end.

        Raises:
            EnvStateError: Before ``reset`` or after the episode ended.
            InvalidActionError: When the action is not an assistant turn.

        """
        if self._begin_step(action):
            self._accept_user(self._user_call_sync)
        return self._end_step()

    async def astep(self, action: Any) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        """Async twin of :meth:`step` (the user simulator call is awaited)."""
        if self._begin_step(action):
            await self._accept_user_async()
        return self._end_step()

    # ----------------------------------------------------------------- user simulator
    def _user_seed(self) -> int | None:
        # A distinct but reproducible seed per user turn, so sampled replies differ across turns.
        return None if self._seed is None else self._seed * 1009 + len(self._messages)

    def _user_call_sync(self) -> UserTurn:
        return self.user.respond(self.task, tuple(self._messages), seed=self._user_seed())

    def _accept_user(self, call: Any) -> None:
        try:
            turn = call()
        except Exception as exc:
            self._user_failed(exc)
            raise
        self._apply_user_turn(turn)

    async def _accept_user_async(self) -> None:
        try:
            turn = await self.user.arespond(self.task, tuple(self._messages), seed=self._user_seed())
        except Exception as exc:
            self._user_failed(exc)
            raise
        self._apply_user_turn(turn)

    def _user_failed(self, exc: Exception) -> None:
        self._error = f"user simulator failed: {type(exc).__name__}: {exc}"
        self._finish("user_error")

    def _apply_user_turn(self, turn: UserTurn) -> None:
        if turn.meta is not None:
            self._user_trace.append({"turn": self._turn, **turn.meta})
        if turn.usage is not None:
            self._user_usage = self._user_usage + turn.usage
        if turn.content or turn.stop is None:
            self._append(UserMessage(content=turn.content))
        if turn.stop is not None:
            self._finish("user_stop" if turn.stop == "stop" else turn.stop)

    # ----------------------------------------------------------------- bookkeeping
    def _append(self, msg: Message) -> None:
        self._messages.append(msg)
        self._obs.append(msg.to_openai())

    def _observation(self) -> Observation:
        # A fresh dict per message every call, as Gymnasium's checker requires (no two observations may share
        # a dict; users keep them). The strings are shared, and so is an assistant turn's ``tool_calls`` list
        # (not copied per step: the conversation is O(turns), and copying it deeply made each step O(calls
        # so far)); change a message's tool calls by replacing its list, not by editing it in place.
        return tuple(map(dict.copy, self._obs))

    def _finish(self, termination: Termination) -> None:
        self._done = True
        self._termination = termination
        if termination in UNSCORED_TERMINATIONS:
            self._reward_info = None
        else:
            self._reward_info = self.domain.verifier.score(self.task, self._view, self._messages, termination)

    def _final_info(self) -> dict[str, Any]:
        return {
            "termination": self._termination,
            "reward_info": self._reward_info,
            "error": self._error,
        }

    def end(self, termination: Termination, error: str | None = None) -> None:
        """End the episode from outside the step loop (e.g. the policy produced no usable action).

        Args:
            termination: Why it ended.
            error: Optional description recorded on the episode.

        """
        if self._task is None:
            raise EnvStateError("call reset() first")
        if not self._done:
            self._error = error
            self._finish(termination)

    def score(self) -> RewardInfo:
        """Score the current state as if the episode ended now (no side effects)."""
        return self.domain.verifier.score(self.task, self.view, self._messages)

    def to_episode(self, *, trial: int = 0, **fields: Any) -> Episode:
        """Build the :class:`Episode` record of the current (normally finished) episode.

        Args:
            trial: Trial index for pass^k.
            **fields: Extra Episode fields (agent, agent_config, user, user_config, agent_usage, ...).

        Returns:
            The record.

        """
        task = self.task
        termination = fields.pop("termination", None) or self._termination or "max_turns"
        info = self._reward_info if termination == self._termination else None
        return Episode(
            episode_id=f"{self.domain.name}/{task.id}/{trial}",
            domain=self.domain.name,
            task_id=task.id,
            split=task.split,
            trial=trial,
            seed=self._seed,
            system_prompt=self.system_prompt,
            tools=list(self.tool_schemas),
            messages=list(self._messages),
            reward=info.reward if info else 0.0,
            reward_info=info,
            termination=termination,
            error=fields.pop("error", None) or self._error,
            num_turns=self._turn,
            user_usage=self._user_usage,
            duration_s=round(time.perf_counter() - self._started, 6),
            started_at=fields.pop("started_at", None) or datetime.now(UTC).isoformat(timespec="seconds"),
            diff=self._view.diff() if self._view is not None else [],
            gold_diff=list(self.domain.verifier.gold(task).diff),
            user_trace=list(self._user_trace),
            semantics=self.domain.semantics.label,
            versions={"apigen_envs": __version__, "domain_source": self.domain.source},
            **fields,
        )

    def render(self) -> str | None:
        """A plain-text transcript when ``render_mode == "ansi"``."""
        if self.render_mode != "ansi":
            return None
        lines = []
        for msg in self._messages:
            if isinstance(msg, AssistantMessage):
                if msg.content:
                    lines.append(f"agent: {msg.content}")
                for call in msg.tool_calls:
                    lines.append(f"agent -> {call.name}({call.arguments_json()})")
            elif isinstance(msg, ToolMessage):
                lines.append(f"tool[{msg.name}]{' ERROR' if msg.error else ''}: {msg.content[:500]}")
            else:
                lines.append(f"{msg.role}: {msg.content}")
        if self._done:
            lines.append(
                f"-- ended: {self._termination}, reward {self._reward_info.reward if self._reward_info else 0.0}"
            )
        return "\n".join(lines) + "\n"


def make(env_id_or_domain: str, **kwargs: Any) -> Any:
    """Make an env from a Gymnasium id or a domain name, with did-you-mean errors.

    Args:
        env_id_or_domain: ``"apigen/Retail-v0"`` or ``"retail"``.
        **kwargs: Passed to :class:`ToolUseEnv`.

    Returns:
        The env (unwrapped when given a domain name; through ``gymnasium.make`` for an id).

    Raises:
        DomainNotFoundError: For an unknown id or domain.

    """
    register_envs()
    if env_id_or_domain in gym.registry:
        return gym.make(env_id_or_domain, **kwargs)
    if env_id_or_domain in BUILTIN_DOMAINS or ":" in env_id_or_domain:
        return ToolUseEnv(env_id_or_domain, **kwargs)
    choices = [*GYM_IDS, *BUILTIN_DOMAINS]
    raise DomainNotFoundError(
        f"unknown env or domain {env_id_or_domain!r}; choose from {choices}.{did_you_mean(env_id_or_domain, choices)}"
    )
