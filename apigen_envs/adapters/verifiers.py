"""A ``verifiers`` multi-turn environment whose rollouts drive a ToolUseEnv and whose reward is our verifier.

It follows verifiers' ``MultiTurnEnv`` protocol: a dataset of rows (``prompt``, ``info``), per-rollout
``state``, ``setup_state`` / ``env_response`` / ``is_completed`` hooks, and a rubric of reward functions
that read the state. Tool calls and the simulated customer live in the env, so ``env_response`` answers
an assistant turn with the tool results and/or the customer's reply, exactly as ``ToolUseEnv.step`` does.

Installed versions: verifiers 0.4.x (the only one on the index here) replaced ``MultiTurnEnv`` with its
``verifiers.v1`` stack and pins ``openai<3``, which conflicts with this project's client, so this module
does not import verifiers. :class:`ApigenMultiTurnEnv` carries the same hooks and a self-contained
:meth:`~ApigenMultiTurnEnv.rollout`; :func:`as_verifiers_env` mixes it into ``vf.MultiTurnEnv`` where a
version that has that class is installed; :func:`load_environment` is the environment-module entry point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from apigen_envs.adapters import drive_episode, openai_policy
from apigen_envs.domain import Domain
from apigen_envs.messages import AssistantMessage, message_from_openai
from apigen_envs.protocols import UserSimulator

State = dict[str, Any]
Messages = list[dict[str, Any]]


def apigen_reward(state: State, **_: Any) -> float:
    """Reward function for a rubric: the verifier's reward (1.0 or 0.0) recorded in the state."""
    info = state.get("reward_info")
    return float(info.reward) if info is not None else 0.0


def apigen_shaped(state: State, **_: Any) -> float:
    """Metric for a rubric: the dense shaped score (fraction of gold rows and outputs matched)."""
    info = state.get("reward_info")
    return float(info.shaped) if info is not None else 0.0


class ApigenMultiTurnEnv:
    """Multi-turn environment over one domain, in the shape of verifiers' ``MultiTurnEnv``.

    Args:
        domain: Domain name or :class:`Domain`.
        split: Tasks of this split become the dataset.
        task_ids: Or exactly these tasks.
        max_turns: Agent steps per episode.
        user_factory: Builds a user simulator per rollout (default: the scripted user).
        data_dir: Domain data directory.
        seed: Base seed; row ``i`` uses ``seed + i`` unless the state carries one.

    """

    def __init__(
        self,
        domain: str | Domain = "mock",
        *,
        split: str | None = None,
        task_ids: Sequence[str] | None = None,
        max_turns: int = 30,
        user_factory: Callable[[], UserSimulator] | None = None,
        data_dir: str | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        from apigen_envs.registry import load_domain

        self.domain = domain if isinstance(domain, Domain) else load_domain(domain, data_dir)
        tasks = [self.domain.task(t) for t in task_ids] if task_ids else list(self.domain.task_list(split))
        self.max_turns = max_turns
        self.user_factory = user_factory
        self.seed = seed
        self.reward_funcs = (apigen_reward, apigen_shaped)
        self.reward_weights = (1.0, 0.0)
        # Rows carry no gold data: the answer is checked by the verifier from the task id alone.
        self.dataset = [
            {
                "prompt": [{"role": "system", "content": self.domain.system_prompt()}],
                "answer": "",
                "task": self.domain.name,
                "info": {"domain": self.domain.name, "task_id": t.id, "index": i},
            }
            for i, t in enumerate(tasks)
        ]
        if type(self).__mro__[-2] is not ApigenMultiTurnEnv:  # mixed into vf.MultiTurnEnv: it needs the limit too
            kwargs.setdefault("max_turns", max_turns)
        super().__init__(**kwargs)

    @property
    def tools(self) -> list[dict[str, Any]]:
        """OpenAI tool schemas offered to the policy (``oai_tools`` in verifiers)."""
        return list(self.domain.tools.schemas())

    oai_tools = tools

    # ----------------------------------------------------------------- MultiTurnEnv hooks
    def _make_env(self) -> Any:
        from apigen_envs.env import ToolUseEnv

        user = self.user_factory() if self.user_factory else None
        return ToolUseEnv(self.domain, user=user, max_turns=self.max_turns)

    async def setup_state(self, state: State, **_: Any) -> State:
        """Open the episode for the row in ``state["info"]``; the customer's opening goes to ``state["opening"]``."""
        info = state.get("info") or {}
        env = self._make_env()
        seed = state.get("seed", self.seed + int(info.get("index", 0)))
        obs, reset_info = await env.areset(seed=seed, options={"task_id": info["task_id"]})
        state.update(apigen_env=env, opening=list(obs), seen=len(obs), reward_info=None, seed=seed)
        state["tools"] = list(reset_info["tools"])
        return state

    async def is_completed(self, messages: Messages, state: State, **_: Any) -> bool:
        """The env ended the episode (customer stop, transfer, terminal tool or max turns)."""
        return bool(state["apigen_env"].done)

    async def env_response(self, messages: Messages, state: State, **_: Any) -> tuple[Messages, State]:
        """Apply the last assistant message and answer with the tool results and/or the customer's reply."""
        env = state["apigen_env"]
        last = messages[-1]
        action = last if isinstance(last, AssistantMessage) else message_from_openai({**last, "role": "assistant"})
        obs, reward, _, _, info = await env.astep(action)
        # The env's record includes the assistant turn itself, which the trainer already holds.
        new = list(obs[state["seen"] + 1 :])
        state["seen"] = len(obs)
        if env.done:
            state["reward_info"] = info.get("reward_info")
            state["termination"] = info.get("termination")
            state["reward"] = float(reward)
        return new, state

    async def score(self, state: State) -> dict[str, float]:
        """Every reward function on the final state, plus the weighted total under ``"reward"``."""
        scores = {fn.__name__: fn(state) for fn in self.reward_funcs}
        scores["reward"] = sum(
            w * scores[fn.__name__] for fn, w in zip(self.reward_funcs, self.reward_weights, strict=True)
        )
        return scores

    # ----------------------------------------------------------------- standalone rollout
    async def rollout(self, client: Any, model: str, row: dict[str, Any], **sampling: Any) -> tuple[Messages, State]:
        """Run one row with an OpenAI-compatible async client, through the hooks above.

        Args:
            client: ``openai.AsyncOpenAI``-style client.
            model: Model name.
            row: A dataset row.
            **sampling: Extra request fields.

        Returns:
            (completion messages, final state); ``state["prompt"]`` is the system prompt plus opening.

        """
        state: State = {"info": dict(row["info"])}
        state = await self.setup_state(state)
        prompt = [*row["prompt"], *state["opening"]]
        state["prompt"] = prompt
        policy = openai_policy(client, model, **sampling)
        completion: Messages = []
        while not await self.is_completed(prompt + completion, state):
            action, _ = await policy(prompt + completion, state["tools"])
            if action.is_empty:
                action = AssistantMessage(content="Sorry, could you say that again?")
            completion.append(action.to_openai())
            new, state = await self.env_response(prompt + completion, state)
            completion.extend(new)
        state["completion"] = completion
        return completion, state


def as_verifiers_env(**kwargs: Any) -> Any:
    """The environment as a real ``vf.MultiTurnEnv`` subclass, where such a verifiers version is installed.

    Raises:
        ImportError: When verifiers (with ``MultiTurnEnv``) is not installed.

    """
    import verifiers as vf  # type: ignore[import-not-found]

    if not hasattr(vf, "MultiTurnEnv"):
        raise ImportError(
            f"verifiers {getattr(vf, '__version__', '?')} has no MultiTurnEnv (its v1 stack replaced it); "
            "use ApigenMultiTurnEnv directly"
        )
    from datasets import Dataset

    class _VfApigenEnv(ApigenMultiTurnEnv, vf.MultiTurnEnv):  # type: ignore[misc, name-defined]
        pass

    probe = ApigenMultiTurnEnv(**kwargs)
    rubric = vf.Rubric(funcs=list(probe.reward_funcs), weights=list(probe.reward_weights))
    return _VfApigenEnv(**kwargs, dataset=Dataset.from_list(probe.dataset), rubric=rubric)


def load_environment(**kwargs: Any) -> ApigenMultiTurnEnv:
    """Environment-module entry point: a ``vf.MultiTurnEnv`` when possible, else :class:`ApigenMultiTurnEnv`."""
    try:
        return as_verifiers_env(**kwargs)
    except ImportError:
        return ApigenMultiTurnEnv(**kwargs)


__all__ = [
    "ApigenMultiTurnEnv",
    "apigen_reward",
    "apigen_shaped",
    "as_verifiers_env",
    "drive_episode",
    "load_environment",
]
