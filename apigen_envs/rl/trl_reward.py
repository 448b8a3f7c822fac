"""TRL glue: prompts cut from gold trajectories, and a reward that scores a completion by playing it in the env.

:func:`step_prompts` makes single-step RL prompts (e.g. for TRL's ``GRPOTrainer``); :class:`EnvStepReward`
is the matching ``reward_funcs`` entry. Both number steps the same way (see :func:`gold_turn`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from apigen_envs.domain import Domain
from apigen_envs.env import ToolUseEnv
from apigen_envs.episode import Episode
from apigen_envs.llm import build_assistant_message
from apigen_envs.messages import AssistantMessage, Message, ToolCall, Usage
from apigen_envs.protocols import AgentContext, UserSimulator
from apigen_envs.registry import load_domain
from apigen_envs.rl.rewards import RewardMode, check_mode, episode_reward
from apigen_envs.runner import run_episode
from apigen_envs.task import Task


def gold_call(task: Task, index: int) -> AssistantMessage:
    """The assistant turn making gold action ``index`` of a task (one tool call, id ``gold_<index>``)."""
    action = task.actions[index]
    return AssistantMessage(
        tool_calls=(ToolCall(id=f"gold_{index}", name=action.name, arguments=dict(action.arguments)),)
    )


def closing_turn(task: Task) -> AssistantMessage:
    """The closing reply that states a task's required outputs."""
    outputs = ", ".join(task.outputs)
    return AssistantMessage(content=f"All done. {outputs}." if outputs else "All done.")


def _num_steps(task: Task) -> int:
    # One step per gold action, plus a final text step when the task has required outputs to state.
    return len(task.actions) + (1 if task.outputs and "outputs" in task.reward_basis else 0)


def gold_turn(task: Task, step: int) -> AssistantMessage:
    """The gold assistant turn at ``step`` of a task, as :func:`step_prompts` numbers steps.

    Args:
        task: The task.
        step: The step index: a gold action's index, or ``len(task.actions)`` for the closing message
            that states the required outputs.

    Returns:
        The gold tool call, or the closing text.

    Raises:
        ValueError: When the step is out of range.

    """
    if 0 <= step < len(task.actions):
        return gold_call(task, step)
    if step == len(task.actions):
        return closing_turn(task)
    raise ValueError(f"step {step} out of range for task {task.id!r} ({len(task.actions)} gold actions)")


def step_prompts(
    domain: Domain | str,
    *,
    task_ids: Sequence[str] | None = None,
    split: str | None = None,
    steps: Literal["last", "all"] = "last",
    include_system: bool = True,
    user: UserSimulator | None = None,
) -> list[dict[str, Any]]:
    """Prompts cut from gold trajectories, for single-step RL (e.g. TRL's GRPOTrainer).

    Step k of a task is the conversation after the user's opening message and the first k gold actions
    (each an assistant tool call with its tool result). The policy's job at step k is the (k+1)-th gold
    action, or, at the final step of a task with required outputs, a reply stating them. Score
    completions with :class:`EnvStepReward`.

    Args:
        domain: A Domain or a domain name.
        task_ids: Tasks to use (default: all, or those of ``split``).
        split: Restrict to a split when ``task_ids`` is None.
        steps: ``"last"``: one prompt per task (its final step). ``"all"``: one per step.
        include_system: Put the system prompt first.
        user: User simulator for the opening message (default: scripted, which opens with the task's
            instruction).

    Returns:
        Rows ``{"prompt": [messages], "task_id": str, "step": int}`` (a ``datasets.Dataset.from_list``
        input; TRL passes ``task_id`` and ``step`` on to reward functions).

    """
    if steps not in ("last", "all"):
        raise ValueError(f"steps must be 'last' or 'all', got {steps!r}")
    dom = domain if isinstance(domain, Domain) else load_domain(domain)
    tasks = [dom.task(t) for t in task_ids] if task_ids is not None else list(dom.task_list(split))
    rows: list[dict[str, Any]] = []
    for task in tasks:
        total = _num_steps(task)
        if total == 0:
            continue
        wanted = [total - 1] if steps == "last" else list(range(total))
        env = ToolUseEnv(dom, user=user, task_ids=[task.id], max_turns=total + 2)
        env.reset(seed=0, options={"task_id": task.id})
        done = 0
        for k in wanted:
            while done < k and not env.done:
                env.step(gold_call(task, done))
                done += 1
            if env.done:
                break
            prompt = [m.to_openai() for m in env.messages]
            if include_system:
                prompt.insert(0, {"role": "system", "content": env.system_prompt})
            rows.append({"prompt": prompt, "task_id": task.id, "step": k})
    return rows


class _StepScript:
    """The agent of an :class:`EnvStepReward` episode: gold turns, the policy's turn, then the gold continuation.

    When the continuation runs out before the episode ends (a user who keeps talking), the closing turn is
    repeated until the env's turn limit.
    """

    name = "policy"

    def __init__(self, before: list[AssistantMessage], policy: Any, after: list[AssistantMessage]) -> None:
        self._turns: list[Any] = [*before, policy, *after]
        self._next = 0

    def act(self, conversation: Sequence[Message], context: AgentContext) -> Any:
        """The next scripted turn; the policy's is parsed only when its turn comes."""
        turn = self._turns[min(self._next, len(self._turns) - 1)]
        self._next += 1
        return turn() if callable(turn) else turn

    async def aact(self, conversation: Sequence[Message], context: AgentContext) -> Any:
        """Async twin of :meth:`act`."""
        return self.act(conversation, context)


class EnvStepReward:
    """A reward function that scores a completion by running it in the env (TRL ``reward_funcs`` form).

    For a prompt made by :func:`step_prompts` at step k of a task, the completion is parsed as one
    assistant turn (native-looking JSON tool calls, ``<tool_call>`` tags or fenced JSON become tool
    calls; anything else is text for the user). Then a fresh env episode runs through the episode runner:
    the first k gold actions, the policy's turn, the remaining gold actions, and a closing message stating
    the required outputs; the scripted user answers as usual. The reward is the verifier's (binary, or
    shaped) on that episode. A completion that is no usable turn (empty, another role, malformed) ends the
    episode as ``invalid_action`` with reward 0, as everywhere else.

    So the reward measures the policy's step by its effect on the outcome: a wrong write, a skipped
    write, a missing output or ending the conversation early scores 0; the gold action scores 1. Read-only
    calls cannot change the outcome, so any valid read at a read step scores 1 (the gold continuation
    supplies what it needed).

    Calling it records every reward in :attr:`rewards` (so tests and logs can check where rewards came
    from). It is safe to use from one trainer process; create one per process.

    Args:
        domain: A Domain or a domain name.
        reward_mode: ``"binary"`` or ``"shaped"``.
        user: User simulator (default: scripted).
        seed: Episode seed.
        keep_episodes: Keep every scored episode in :attr:`episodes` (for inspection; grows without bound).

    """

    def __init__(
        self,
        domain: Domain | str = "mock",
        *,
        reward_mode: RewardMode = "binary",
        user: UserSimulator | None = None,
        seed: int = 0,
        keep_episodes: bool = False,
    ) -> None:
        check_mode(reward_mode)
        self.domain = domain if isinstance(domain, Domain) else load_domain(domain)
        self.reward_mode: RewardMode = reward_mode
        self.user = user
        self.seed = seed
        self.rewards: list[float] = []
        self.episodes: list[Episode] = []
        self.keep_episodes = keep_episodes
        self.__name__ = f"apigen_{self.domain.name}_{reward_mode}"

    def parse(self, completion: Any) -> Any:
        """The policy's turn in a completion (text, or TRL's conversational ``[{"role": "assistant", ...}]``).

        Tool calls written as text are parsed as the project's LLM client parses them. A completion that is
        not an assistant turn (another role, content that is not text, not a message at all) is returned as
        it is: the runner then counts it against the policy, as it does any turn it cannot execute.

        Args:
            completion: What the policy generated.

        Returns:
            An :class:`AssistantMessage`, or the unusable completion itself.

        """
        message: Any = completion
        if isinstance(completion, str):
            message = {"role": "assistant", "content": completion}
        elif isinstance(completion, list):
            message = next((m for m in reversed(completion) if isinstance(m, Mapping)), completion)
        if not isinstance(message, Mapping) or message.get("role", "assistant") != "assistant":
            return message
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            return message
        return build_assistant_message(content, message.get("tool_calls"), self.domain.tools.schemas(), Usage())

    def episode(self, task_id: str, step: int, completion: Any) -> Episode:
        """The episode that scores ``completion`` at ``step`` of ``task_id`` (see the class docstring)."""
        task = self.domain.task(task_id)
        total = _num_steps(task)
        if not 0 <= step < max(total, 1):
            raise ValueError(f"step {step} out of range for task {task_id!r} ({total} steps)")
        env = ToolUseEnv(self.domain, user=self.user, task_ids=[task.id], max_turns=total + 4)
        before = [gold_call(task, i) for i in range(min(step, len(task.actions)))]
        after = [gold_call(task, i) for i in range(step + 1, len(task.actions))]
        script = _StepScript(before, lambda: self.parse(completion), [*after, closing_turn(task)])
        return run_episode(env, script, task_id=task.id, seed=self.seed)

    def score(self, task_id: str, step: int, completion: Any) -> float:
        """The reward of one completion."""
        ep = self.episode(task_id, step, completion)
        if self.keep_episodes:
            self.episodes.append(ep)
        return episode_reward(ep, self.reward_mode)

    def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] = (),
        *,
        task_id: Sequence[str],
        step: Sequence[int],
        **kwargs: Any,
    ) -> list[float]:
        """Score a batch (TRL passes the dataset's ``task_id`` and ``step`` columns as keyword lists)."""
        if not len(completions) == len(task_id) == len(step):
            raise ValueError(f"got {len(completions)} completions, {len(task_id)} task ids and {len(step)} steps")
        out = [self.score(t, int(s), c) for t, s, c in zip(task_id, step, completions, strict=True)]
        self.rewards.extend(out)
        return out
