"""A ``verifiers`` multi-turn environment whose rollouts drive a ToolUseEnv and whose reward is our verifier.

It follows verifiers' ``MultiTurnEnv`` protocol: a dataset of rows (``prompt``, ``info``), per-rollout
``state``, ``setup_state`` / ``env_response`` / ``is_completed`` hooks, and a rubric of reward functions
that read the state. Tool calls and the simulated customer live in the env, so ``env_response`` answers
an assistant turn with the tool results and/or the customer's reply, exactly as ``ToolUseEnv.step`` does.

Two verifiers APIs are covered:

* Classic verifiers (``vf.MultiTurnEnv``, before 0.4): :class:`ApigenMultiTurnEnv` carries the hooks and a
  self-contained :meth:`~ApigenMultiTurnEnv.rollout`; :func:`as_verifiers_env` mixes it into
  ``vf.MultiTurnEnv`` where such a version is installed.
* verifiers 0.4.x, whose stack lives in ``verifiers.v1`` and has no ``MultiTurnEnv``: an environment is a
  ``Taskset`` (tasks plus ``@vf.reward`` scoring) played by an agent whose ``Harness`` runs the episode.
  Every model call must reach verifiers' interception endpoint, which records the trace. Our harness runs
  the ToolUseEnv loop in-process (tools and the simulated customer stay ours), sends each policy turn
  through that endpoint with an ``openai`` client, and leaves the live env on the trace's state, where
  the task's reward reads our verifier's verdict. :func:`as_verifiers_v1_env` builds the real
  ``vf.SingleAgentEnv``; :func:`run_verifiers_v1_episode` runs one task through ``Env.run_episode``.

verifiers resolves tasksets and harnesses by id through ``importlib``, and a dotted module path is not a
valid id, so the plugin module is registered under the top-level name :data:`V1_PLUGIN_ID` on first use.
verifiers 0.4.0 pins ``openai<3``; our code runs on openai 2.x too (see ``scripts/check_verifiers.sh``).
:func:`load_environment` is the environment-module entry point for either API.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import Any

from apigen_envs.adapters import drive_episode, openai_policy
from apigen_envs.domain import Domain
from apigen_envs.errors import LLMError
from apigen_envs.messages import to_assistant_message
from apigen_envs.protocols import UserSimulator
from apigen_envs.runner import describe_error, step_failure

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
        """Apply the last assistant message and answer with the tool results and/or the customer's reply.

        The episode runner's rule applies: a turn that cannot be executed (empty, another role, malformed)
        ends the episode as ``invalid_action`` (reward 0, completed, nothing to answer); a wrong tool call
        is answered with an error tool message.
        """
        env = state["apigen_env"]
        try:
            action = to_assistant_message(messages[-1])
        except Exception as exc:  # noqa: BLE001 - whatever reading the turn raised, the turn was unusable
            env.end("invalid_action", describe_error(exc))
            return [], self._final(env, state)
        seen = len(env.messages) + 1  # the env's record includes the assistant turn, which the trainer holds
        try:
            await env.astep(action)
        except Exception as exc:  # noqa: BLE001 - recorded as the runner records it
            if not env.done:
                env.end(step_failure(exc), describe_error(exc))
        new = [m.to_openai() for m in env.messages[seen:]]
        return new, self._final(env, state) if env.done else state

    @staticmethod
    def _final(env: Any, state: State) -> State:
        info = env.reward_info
        state.update(reward_info=info, termination=env.termination, reward=float(info.reward) if info else 0.0)
        return state

    async def score(self, state: State) -> dict[str, float]:
        """Every reward function on the final state, plus the weighted total under ``"reward"``."""
        scores = {fn.__name__: fn(state) for fn in self.reward_funcs}
        scores["reward"] = sum(
            w * scores[fn.__name__] for fn, w in zip(self.reward_funcs, self.reward_weights, strict=True)
        )
        return scores

    # ----------------------------------------------------------------- standalone rollout
    async def rollout(self, client: Any, model: str, row: dict[str, Any], **sampling: Any) -> tuple[Messages, State]:
        """Run one row with an OpenAI-compatible async client, through the episode runner.

        Args:
            client: ``openai.AsyncOpenAI``-style client.
            model: Model name.
            row: A dataset row.
            **sampling: Extra request fields.

        Returns:
            (completion messages, final state); ``state["prompt"]`` is the system prompt plus opening.

        """
        info = dict(row["info"])
        env = self._make_env()
        seed = self.seed + int(info.get("index", 0))
        run = await drive_episode(
            env, openai_policy(client, model, **sampling), seed=seed, options={"task_id": info["task_id"]}
        )
        state: State = {"info": info, "apigen_env": env, "seed": seed, "tools": run.tools}
        state.update(prompt=[*row["prompt"], *run.prompt[1:]], completion=run.completion)
        return run.completion, self._final(env, state)


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


V1_PLUGIN_ID = "apigen_envs_verifiers_v1"
"""The id under which verifiers 0.4's loaders find our taskset and harness (``--env.taskset.id``)."""


@functools.cache
def v1_plugin() -> ModuleType:
    """The verifiers v1 plugin module: ``ApigenTaskset``, ``ApigenHarness`` and their configs.

    Built once, on first use, because ``verifiers.v1`` is optional and heavy to import. It is registered in
    ``sys.modules`` as :data:`V1_PLUGIN_ID` so that verifiers' id-based loaders (``load_taskset``,
    ``load_harness``) resolve it; the harness id defaults to the taskset id, so one module serves both.

    Raises:
        ImportError: When ``verifiers.v1`` (verifiers >= 0.4) is not installed.

    """
    import verifiers.v1 as vf  # type: ignore[import-not-found]
    from pydantic import ConfigDict

    from apigen_envs.env import ToolUseEnv
    from apigen_envs.registry import load_domain

    class ApigenTaskData(vf.TaskData):  # type: ignore[misc, name-defined]
        """One task of one domain; gold data stays in the domain and is never put on the wire."""

        domain: str = "mock"
        task_id: str
        data_dir: str | None = None
        seed: int | None = None

    class ApigenState(vf.State):  # type: ignore[misc, name-defined]
        """Per-rollout, in-memory state (verifiers excludes it from the serialized trace)."""

        model_config = ConfigDict(arbitrary_types_allowed=True, ser_json_inf_nan="constants")
        env: Any = None

    class ApigenTask(vf.Task[ApigenTaskData, ApigenState]):  # type: ignore[misc, name-defined]
        """Scores a trace with our verifier's verdict on the episode the harness ran."""

        @property
        def key(self) -> str:
            """Durable identity: domain and task id (the content hash would change with ``idx``)."""
            return f"{self.data.domain}/{self.data.task_id}"

        @vf.reward  # type: ignore[misc, untyped-decorator]
        async def apigen_reward(self, trace: Any) -> float:
            """The verifier's reward (1.0 or 0.0); 0.0 when the episode never finished."""
            info = _final_reward_info(trace)
            return float(info.reward) if info is not None else 0.0

        @vf.metric  # type: ignore[misc, untyped-decorator]
        async def apigen_shaped(self, trace: Any) -> float:
            """The dense shaped score, recorded as a metric (not summed into the reward)."""
            info = _final_reward_info(trace)
            return float(info.shaped) if info is not None else 0.0

    class ApigenTasksetConfig(vf.TasksetConfig):  # type: ignore[misc, name-defined]
        """Which tasks of which domain become the taskset."""

        domain: str = "mock"
        split: str | None = None
        task_ids: list[str] | None = None
        data_dir: str | None = None
        seed: int | None = None

    class ApigenTaskset(vf.Taskset[ApigenTask, ApigenTasksetConfig]):  # type: ignore[misc, name-defined]
        """A domain's tasks, in domain order; the domain policy is the system prompt."""

        def load(self) -> Iterable[ApigenTask]:
            """One :class:`ApigenTask` per selected task."""
            cfg = self.config
            domain = load_domain(cfg.domain, cfg.data_dir)
            tasks = [domain.task(t) for t in cfg.task_ids] if cfg.task_ids else list(domain.task_list(cfg.split))
            for i, task in enumerate(tasks):
                data = ApigenTaskData(
                    id=task.id,
                    name=task.id,
                    domain=domain.name,
                    task_id=task.id,
                    data_dir=cfg.data_dir,
                    seed=None if cfg.seed is None else cfg.seed + i,
                    system_prompt=domain.system_prompt(),
                    # verifiers refuses a task without a prompt unless another agent opens; here the
                    # simulated customer opens inside the harness, so the prompt only labels the task.
                    prompt=_OPENING_NOTE,
                )
                yield ApigenTask(data, cfg.task)

    class ApigenHarnessConfig(vf.HarnessConfig):  # type: ignore[misc, name-defined]
        """How the in-process episode loop runs."""

        max_turns: int = 30

    class ApigenHarness(vf.Harness[ApigenHarnessConfig]):  # type: ignore[misc, name-defined]
        """Runs one ToolUseEnv episode in-process; every policy turn goes through verifiers' endpoint."""

        APPENDS_SYSTEM_PROMPT = True
        EXECUTES_CODE = False
        NEEDS_CONTAINER = False

        async def launch(
            self,
            ctx: Any,
            trace: Any,
            runtime: Any,
            endpoint: str,
            secret: str,
            mcp_urls: dict[str, str],
            data: Any,
            tool_interception_url: str | None = None,
        ) -> Any:
            """Play the task to the end; the verdict stays on ``trace.state.env`` for the task's reward."""
            import openai

            domain = load_domain(data.domain, data.data_dir)
            env = ToolUseEnv(domain, max_turns=self.config.max_turns)
            trace.state.env = env
            async with openai.AsyncOpenAI(base_url=endpoint, api_key=secret, max_retries=0) as client:
                run = await drive_episode(
                    env, openai_policy(client, ctx.model), seed=data.seed, options={"task_id": data.task_id}
                )
            if run.info.get("termination") == "agent_error":
                # A verifiers stop (turn or token limit) refuses the next model call: the episode ends
                # unscored and the trace keeps the stop condition. Any other model failure is verifiers' to see.
                if trace.stop_condition is None:
                    raise LLMError(str(run.info.get("error")))
                return runtime_result(0, f"stopped: {trace.stop_condition}")
            trace.info["apigen"] = {
                "task_id": data.task_id,
                "termination": run.info.get("termination"),
                "reward": run.reward,
            }
            return runtime_result(0, "")

    def runtime_result(code: int, text: str) -> Any:
        from verifiers.v1.runtimes import ProgramResult

        return ProgramResult(exit_code=code, stdout=text, stderr="")

    module = ModuleType(V1_PLUGIN_ID, "apigen-envs taskset and harness for verifiers.v1")
    exported = {
        "ApigenTaskData": ApigenTaskData,
        "ApigenState": ApigenState,
        "ApigenTask": ApigenTask,
        "ApigenTasksetConfig": ApigenTasksetConfig,
        "ApigenTaskset": ApigenTaskset,
        "ApigenHarnessConfig": ApigenHarnessConfig,
        "ApigenHarness": ApigenHarness,
    }
    for name, cls in exported.items():
        cls.__module__ = V1_PLUGIN_ID
        setattr(module, name, cls)
    module.__all__ = list(exported)  # type: ignore[attr-defined]
    sys.modules.setdefault(V1_PLUGIN_ID, module)
    return module


_OPENING_NOTE = "(The customer opens the conversation.)"


def _final_reward_info(trace: Any) -> Any:
    env = getattr(trace.state, "env", None)
    return None if env is None else env.reward_info


def as_verifiers_v1_env(
    domain: str = "mock",
    *,
    split: str | None = None,
    task_ids: Sequence[str] | None = None,
    max_turns: int = 30,
    data_dir: str | None = None,
    seed: int | None = None,
    runtime: str = "subprocess",
    agent: dict[str, Any] | None = None,
) -> Any:
    """A real ``vf.SingleAgentEnv`` (verifiers 0.4.x) over one domain's tasks.

    Args:
        domain: Domain name.
        split: Tasks of this split.
        task_ids: Or exactly these tasks.
        max_turns: Agent steps per episode (our env's limit).
        data_dir: Domain data directory.
        seed: Base episode seed (task ``i`` uses ``seed + i``).
        runtime: verifiers runtime type for the agent seat; the harness runs in-process, so the cheap
            local ``subprocess`` runtime is enough.
        agent: Extra ``vf.AgentConfig`` fields for the seat, e.g. ``{"max_turns": 5}`` (verifiers' own limit on
            model calls, enforced at its interception endpoint) or ``{"timeout": {...}}``.

    Returns:
        The environment; run it with ``env.serving()`` plus ``env.run_episode(task, ctx)``.

    Raises:
        ImportError: When verifiers >= 0.4 is not installed.

    """
    import verifiers.v1 as vf  # type: ignore[import-not-found]

    plugin = v1_plugin()
    taskset = plugin.ApigenTasksetConfig(
        id=V1_PLUGIN_ID,
        domain=domain,
        split=split,
        task_ids=list(task_ids) if task_ids else None,
        data_dir=data_dir,
        seed=seed,
    )
    seat = vf.AgentConfig(
        harness=plugin.ApigenHarnessConfig(id=V1_PLUGIN_ID, max_turns=max_turns),
        runtime={"type": runtime},
        **(agent or {}),
    )
    return vf.SingleAgentEnv(vf.SingleAgentEnvConfig(taskset=taskset, agent=seat))


async def run_verifiers_v1_episode(env: Any, model: str, base_url: str, *, task_id: str | None = None) -> Any:
    """Run one task of ``env`` through verifiers' own episode machinery against an OpenAI-compatible server.

    Args:
        env: From :func:`as_verifiers_v1_env`.
        model: Model name sent to the server.
        base_url: The server's OpenAI base URL (e.g. ``ScriptedServer.base_url``).
        task_id: Which task (default: the first).

    Returns:
        The ``vf.Episode``; ``episode.traces[0].reward`` (the weighted total) and
        ``episode.traces[0].rewards["apigen_reward"].score`` are our verifier's reward.

    Raises:
        KeyError: When ``task_id`` is not in the taskset.

    """
    import verifiers.v1 as vf  # type: ignore[import-not-found]

    tasks = list(env.taskset)
    chosen = [t for t in tasks if task_id is None or t.data.task_id == task_id][:1]
    if not chosen:
        raise KeyError(f"task {task_id!r} is not in this taskset ({[t.data.task_id for t in tasks]})")
    # The eval client reads its key from an env var; a local server accepts any key, and "EMPTY" is sent
    # when the variable is unset.
    client = vf.EvalClientConfig(base_url=base_url, api_key_var="APIGEN_VF_API_KEY")
    ctx = vf.ModelContext(model=model, client=client)
    async with env.serving():
        return await env.run_episode(chosen[0], ctx)


def load_environment(api: str = "auto", **kwargs: Any) -> Any:
    """Environment-module entry point.

    Args:
        api: ``"classic"`` (a ``vf.MultiTurnEnv``), ``"v1"`` (a ``vf.SingleAgentEnv`` from verifiers 0.4),
            ``"standalone"`` (:class:`ApigenMultiTurnEnv`), or ``"auto"``: the first of those three that
            the installed verifiers supports. ``user_factory`` has no v1 equivalent (the harness config
            must serialize), so ``"auto"`` skips v1 when it is given.
        **kwargs: Passed to the chosen builder.

    Returns:
        The environment.

    Raises:
        ValueError: For an unknown ``api``.
        ImportError: When ``api`` names a verifiers API that is not installed.

    """
    if api == "classic":
        return as_verifiers_env(**kwargs)
    if api == "v1":
        return as_verifiers_v1_env(**kwargs)
    if api == "standalone":
        return ApigenMultiTurnEnv(**kwargs)
    if api != "auto":
        raise ValueError(f"unknown verifiers api {api!r}; use 'auto', 'classic', 'v1' or 'standalone'")
    try:
        return as_verifiers_env(**kwargs)
    except ImportError:
        pass
    if kwargs.get("user_factory") is None:
        try:
            return as_verifiers_v1_env(**{k: v for k, v in kwargs.items() if k != "user_factory"})
        except ImportError:
            pass
    return ApigenMultiTurnEnv(**kwargs)


__all__ = [
    "ApigenMultiTurnEnv",
    "apigen_reward",
    "apigen_shaped",
    "V1_PLUGIN_ID",
    "as_verifiers_env",
    "as_verifiers_v1_env",
    "drive_episode",
    "load_environment",
    "run_verifiers_v1_episode",
    "v1_plugin",
]
