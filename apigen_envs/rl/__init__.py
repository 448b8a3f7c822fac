"""Plugging the envs into RL training loops: GRPO groups, trainer samples, batched stepping, TRL rewards.

Four pieces, each usable alone, one module each:

* **Groups** (:mod:`apigen_envs.rl.groups`: :func:`rollout_group`, :func:`rollout_groups` and their async
  twins): G episodes of one task from the same DB start with different seeds, with rewards,
  group-normalised advantages (GRPO's ``(r - mean) / (std + eps)``, or Dr. GRPO's ``r - mean`` without std
  scaling) and pass^k computed by :mod:`apigen_envs.metrics` from the very same episodes.
* **Trainer samples** (:mod:`apigen_envs.rl.samples`: :func:`to_trainer_sample`, :func:`tokenize_sample`): an
  Episode becomes OpenAI chat messages (system prompt first), the tool schemas, the reward and a
  per-message ``policy_mask``; token ids and logprobs the policy sampled are passed through untouched.
  Given any tokenizer with a chat template, :func:`tokenize_sample` builds ``input_ids`` and a token-level
  ``assistant_mask`` by incremental templating (see its docstring).
* **Batched stepping** (:mod:`apigen_envs.rl.batch`: :class:`AsyncEnvBatch`): N envs stepped concurrently,
  with one batched policy call per step across all live envs (``policy(list_of_conversations) ->
  list_of_actions``); envs finish at different times and are refilled from a job queue (auto-reset).
  Gymnasium's own vector envs work too: see :func:`make_vector_env`.
* **TRL glue** (:mod:`apigen_envs.rl.trl_reward`: :func:`step_prompts`, :class:`EnvStepReward`): prompts cut
  from gold trajectories and a reward function that scores a completion by running it in the env.

Every episode runs through the one episode runner (:mod:`apigen_envs.runner`), so a policy turn means the
same here as in the collector: a turn that cannot be executed is an ``invalid_action`` episode with reward
0 (it counts, and GRPO learns from it); only infrastructure failures are left out. Rewards (see
:mod:`apigen_envs.rl.rewards`): ``"binary"`` (default) is the verifier's 1.0/0.0, ``"shaped"`` a dense
score in [0, 1] for shaping only; pass^k and success always use the binary reward.
"""

from __future__ import annotations

from apigen_envs.rl.batch import (
    AsyncEnvBatch,
    BatchJob,
    BatchPolicy,
    Conversation,
    OracleBatchPolicy,
    StepResult,
    make_vector_env,
)
from apigen_envs.rl.groups import (
    DomainOrFactory,
    EnvFactory,
    Group,
    GroupBatch,
    arollout_group,
    arollout_groups,
    group_advantages,
    rollout_group,
    rollout_groups,
)
from apigen_envs.rl.rewards import REWARD_MODES, RewardMode, episode_reward
from apigen_envs.rl.samples import ChatTemplateError, TokenizedSample, TrainerSample, to_trainer_sample, tokenize_sample
from apigen_envs.rl.trl_reward import EnvStepReward, gold_turn, step_prompts
from apigen_envs.runner import FunctionAgent, arun_episode, as_agent

__all__ = [
    "REWARD_MODES",
    "AsyncEnvBatch",
    "BatchJob",
    "BatchPolicy",
    "ChatTemplateError",
    "Conversation",
    "DomainOrFactory",
    "EnvFactory",
    "EnvStepReward",
    "FunctionAgent",
    "Group",
    "GroupBatch",
    "OracleBatchPolicy",
    "RewardMode",
    "StepResult",
    "TokenizedSample",
    "TrainerSample",
    "arollout_group",
    "arollout_groups",
    "arun_episode",
    "as_agent",
    "episode_reward",
    "gold_turn",
    "group_advantages",
    "make_vector_env",
    "rollout_group",
    "rollout_groups",
    "step_prompts",
    "to_trainer_sample",
    "tokenize_sample",
]
