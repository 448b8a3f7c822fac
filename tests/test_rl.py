"""RL integration: GRPO groups, advantages, pass^k, trainer samples, token masks, batched and vector envs."""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import pytest

from apigen_envs import load_domain
from apigen_envs.baselines.noop import NoopAgent
from apigen_envs.baselines.oracle import OracleAgent
from apigen_envs.env import ToolUseEnv
from apigen_envs.errors import LLMError
from apigen_envs.messages import AssistantMessage, Message, ToolCall, ToolMessage
from apigen_envs.metrics import summarize
from apigen_envs.protocols import AgentContext
from apigen_envs.rl import (
    AsyncEnvBatch,
    BatchJob,
    ChatTemplateError,
    EnvStepReward,
    FunctionAgent,
    Group,
    OracleBatchPolicy,
    arollout_group,
    as_agent,
    episode_reward,
    gold_turn,
    group_advantages,
    make_vector_env,
    rollout_group,
    rollout_groups,
    step_prompts,
    to_trainer_sample,
    tokenize_sample,
)

ORACLE = OracleAgent()


def _coin(conversation: Sequence[Message], context: AgentContext) -> AssistantMessage:
    if (context.seed or 0) % 2 == 0:
        return ORACLE.act(conversation, context)
    return AssistantMessage(content="I cannot help, sorry.")


# The oracle on even seeds, a do-nothing reply on odd ones: a group with mixed rewards. It reads the gold,
# so it must say it is privileged (the runner gives the task to no one else).
coin_policy = FunctionAgent(_coin, "coin", privileged=True)


def nickname_only(conversation: Sequence[Message], context: AgentContext) -> AssistantMessage:
    """Does the DB part of balance_and_nickname but never states the balance (partial credit)."""
    if not any(isinstance(m, ToolMessage) for m in conversation):
        args = {"account_id": "acc_1002", "nickname": "rainy day"}
        return AssistantMessage(tool_calls=(ToolCall(id="c1", name="set_account_nickname", arguments=args),))
    return AssistantMessage(content="Renamed it.")


# ------------------------------------------------------------------------------------------- advantages
def test_advantages_match_grpo_formula():
    rewards = [1.0, 0.0, 0.0, 1.0]
    adv = group_advantages(rewards, eps=0.0)
    assert adv == pytest.approx([1.0, -1.0, -1.0, 1.0])  # mean .5, population std .5
    adv = group_advantages([1.0, 0.0, 0.0, 0.0], eps=1e-6)
    assert adv[0] == pytest.approx(0.75 / (math.sqrt(0.1875) + 1e-6))
    assert sum(adv) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("eps", [0.0, 1e-6])
@pytest.mark.parametrize("scale_std", [True, False])
def test_zero_variance_group_gives_zero_advantages_not_nan(eps, scale_std):
    for value in (0.0, 1.0, 0.37):
        adv = group_advantages([value] * 5, eps=eps, scale_std=scale_std)
        assert adv == [0.0] * 5
        assert not any(math.isnan(a) for a in adv)
    assert group_advantages([1.0], eps=0.0) == [0.0]


def test_dr_grpo_does_not_scale_by_std():
    assert group_advantages([1.0, 0.0, 0.0, 0.0], scale_std=False) == pytest.approx([0.75, -0.25, -0.25, -0.25])


def test_invalid_episodes_are_left_out_of_group_statistics():
    adv = group_advantages([1.0, 0.0, 0.0], valid=[True, True, False], eps=0.0)
    assert adv == pytest.approx([1.0, -1.0, 0.0])
    assert group_advantages([0.0, 0.0], valid=[False, False]) == [0.0, 0.0]
    with pytest.raises(ValueError, match="valid has 1 entries"):
        group_advantages([1.0, 0.0], valid=[True])
    with pytest.raises(ValueError, match="eps"):
        group_advantages([1.0], eps=-1.0)


# ------------------------------------------------------------------------------------------- groups
def test_oracle_group_all_pass_with_zero_advantages(mock_domain):
    group = rollout_group(mock_domain, "transfer_50", ORACLE, 4)
    assert isinstance(group, Group) and group.size == 4
    assert group.rewards == (1.0, 1.0, 1.0, 1.0)
    assert group.advantages == (0.0, 0.0, 0.0, 0.0)
    assert len(set(group.seeds)) == 4
    assert [ep.seed for ep in group.episodes] == list(group.seeds)
    assert [ep.trial for ep in group.episodes] == [0, 1, 2, 3]
    # Same DB start: every oracle episode makes exactly the gold changes.
    assert len({ep.reward_info.fingerprint for ep in group.episodes}) == 1
    assert group.pass_hat_k(4) == 1.0


def test_mixed_group_advantages_and_pass_k(mock_domain):
    group = rollout_group("mock", "nickname", coin_policy, 4, seeds=[0, 1, 2, 3])
    assert group.rewards == (1.0, 0.0, 1.0, 0.0)
    assert group.advantages[0] > 0 > group.advantages[1]
    assert sum(group.advantages) == pytest.approx(0.0, abs=1e-9)
    assert group.pass_hat_k(1) == pytest.approx(0.5)
    assert group.pass_hat_k(2) == pytest.approx(1 / 6)  # C(2,2)/C(4,2)
    assert group.pass_hat_k(5) is None
    dr = rollout_group("mock", "nickname", coin_policy, 4, seeds=[0, 1, 2, 3], scale_std=False)
    assert dr.advantages == pytest.approx((0.5, -0.5, 0.5, -0.5))


def test_pass_k_from_groups_matches_metrics():
    tasks = ["transfer_50", "nickname", "close_empty", "split_transfer"]
    batch = rollout_groups("mock", tasks, coin_policy, 5, base_seed=3, concurrency=7)
    assert [g.task_id for g in batch.groups] == tasks
    assert all(g.size == 5 for g in batch.groups)
    summary = summarize(batch.episodes)
    for k in range(1, 6):
        assert batch.pass_hat_k(k) == pytest.approx(summary.pass_hat_k[k])
    per_task = {g.task_id: g.pass_hat_k(1) for g in batch.groups}
    assert per_task == {row.task_id: pytest.approx(row.c / row.n) for row in summary.tasks}
    assert batch.summary().episodes == 20
    assert 0.0 < summary.pass_hat_k[1] < 1.0  # the coin policy really mixes outcomes


def test_group_seeds_follow_collector_and_are_reproducible():
    from apigen_envs.collect import episode_seed

    a = rollout_group("mock", "nickname", coin_policy, 3, base_seed=11)
    b = rollout_group("mock", "nickname", coin_policy, 3, base_seed=11)
    assert a.seeds == tuple(episode_seed(11, "nickname", t) for t in range(3))
    assert a.rewards == b.rewards


async def test_async_group_with_env_factory_and_async_policy():
    async def policy(conversation, context):
        await asyncio.sleep(0)
        return ORACLE.act(conversation, context)

    policy.privileged = True  # type: ignore[attr-defined] - a function may declare it reads the gold
    group = await arollout_group(lambda: gym.make("apigen/Mock-v0"), "close_empty", policy, 3, concurrency=2)
    assert group.rewards == (1.0, 1.0, 1.0)
    with pytest.raises(RuntimeError, match="inside an event loop"):
        rollout_group("mock", "close_empty", ORACLE, 2)


def test_factory_max_turns_override_truncates():
    group = rollout_group(lambda: ToolUseEnv("mock"), "transfer_50", ORACLE, 2, max_turns=1)
    assert all(ep.termination == "max_turns" and ep.num_turns == 1 for ep in group.episodes)
    assert group.rewards == (0.0, 0.0)


def test_group_bad_input_errors():
    with pytest.raises(ValueError, match="G must be >= 1"):
        rollout_group("mock", "nickname", ORACLE, 0)
    with pytest.raises(ValueError, match="2 seeds for a group of 3"):
        rollout_group("mock", "nickname", ORACLE, 3, seeds=[1, 2])
    with pytest.raises(ValueError, match="reward_mode"):
        rollout_group("mock", "nickname", ORACLE, 2, reward_mode="dense")
    with pytest.raises(KeyError):
        rollout_group("mock", "no_such_task", ORACLE, 2)
    with pytest.raises(TypeError, match="Domain, a domain name or an env factory"):
        rollout_group(42, "nickname", ORACLE, 2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a ToolUseEnv"):
        rollout_group(lambda: gym.make("CartPole-v1"), "nickname", ORACLE, 1)
    with pytest.raises(TypeError, match="policy must be"):
        as_agent(3)


def test_model_server_failure_is_recorded_and_left_out_of_advantages():
    def flaky(conversation, context):
        if context.seed == 1:
            raise LLMError("model server down")
        return _coin(conversation, context)

    flaky.privileged = True  # type: ignore[attr-defined]
    group = rollout_group("mock", "nickname", flaky, 3, seeds=[0, 1, 2])
    assert [ep.termination for ep in group.episodes][1] == "agent_error"
    assert "model server down" in (group.episodes[1].error or "")
    assert group.valid == (True, False, True)
    assert group.advantages[1] == 0.0
    assert group.rewards[0] == group.rewards[2] == 1.0
    assert group.advantages == (0.0, 0.0, 0.0)  # the two valid episodes agree
    assert group.pass_hat_k(2) == 1.0  # computed over the 2 valid episodes only


def test_policy_bug_counts_against_the_policy_and_gets_a_negative_advantage():
    def buggy(conversation, context):
        if context.seed == 1:
            raise RuntimeError("policy output parser crashed")
        return _coin(conversation, context)

    buggy.privileged = True  # type: ignore[attr-defined]
    group = rollout_group("mock", "nickname", buggy, 3, seeds=[0, 1, 2])
    failed = group.episodes[1]
    assert failed.termination == "invalid_action" and "parser crashed" in (failed.error or "")
    assert group.valid == (True, True, True) and group.rewards == (1.0, 0.0, 1.0)
    assert group.advantages[1] < 0 < group.advantages[0] == group.advantages[2]
    assert group.pass_hat_k(1) == pytest.approx(2 / 3)


# ------------------------------------------------------------------------------------------- rewards
def test_shaped_vs_binary_reward():
    binary = rollout_group("mock", "balance_and_nickname", nickname_only, 2)
    shaped = rollout_group("mock", "balance_and_nickname", nickname_only, 2, reward_mode="shaped")
    assert binary.rewards == (0.0, 0.0)
    # Gold rows all matched (1.0) but the required output "80.5" was never said (0.0): mean 0.5.
    assert shaped.rewards == (0.5, 0.5)
    ep = shaped.episodes[0]
    assert episode_reward(ep, "binary") == 0.0 and episode_reward(ep, "shaped") == 0.5
    assert to_trainer_sample(ep, "shaped").reward == 0.5
    assert to_trainer_sample(ep).reward == 0.0
    # pass^k always counts binary success, whatever the training reward.
    assert shaped.pass_hat_k(1) == 0.0
    with pytest.raises(ValueError, match="reward_mode"):
        episode_reward(ep, "dense")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- samples
def test_trainer_sample_masks_exactly_the_assistant_turns():
    group = rollout_group("mock", "transfer_50", ORACLE, 2)
    samples = group.to_trainer_samples()
    sample = samples[0]
    roles = [m["role"] for m in sample.messages]
    assert roles[0] == "system" and sample.messages[0]["content"] == group.episodes[0].system_prompt
    assert sample.policy_mask == [r == "assistant" for r in roles]
    assert roles.count("assistant") == 3  # two gold calls and the closing reply
    assert len(sample.token_ids) == len(sample.logprobs) == len(sample.messages)
    assert sample.tools and sample.tools[0]["type"] == "function"
    assert sample.reward == 1.0 and sample.advantage == 0.0
    assert sample.reward_info["db_match"] is True
    assert sample.messages[2]["tool_calls"][0]["function"]["name"] == "find_customer_by_email"
    no_system = to_trainer_sample(group.episodes[0], include_system=False)
    assert no_system.messages[0]["role"] == "user" and len(no_system.messages) == len(sample.messages) - 1


def test_token_ids_and_logprobs_pass_through():
    def sampled(conversation, context):
        msg = ORACLE.act(conversation, context)
        n = len(conversation)
        return msg.model_copy(update={"token_ids": (100 + n, 200 + n), "logprobs": (-0.5, -0.25)})

    group = rollout_group("mock", "close_empty", sampled, 1)
    ep = group.episodes[0]
    assistant = [m for m in ep.messages if isinstance(m, AssistantMessage)]
    sample = to_trainer_sample(ep)
    got = [ids for ids, mask in zip(sample.token_ids, sample.policy_mask, strict=True) if mask]
    assert got == [list(m.token_ids) for m in assistant]
    assert all(lp == [-0.5, -0.25] for lp, mask in zip(sample.logprobs, sample.policy_mask, strict=True) if mask)
    assert all(ids is None for ids, mask in zip(sample.token_ids, sample.policy_mask, strict=True) if not mask)
    # Survives the JSONL round trip the collector uses.
    from apigen_envs.episode import Episode

    again = to_trainer_sample(Episode.model_validate_json(ep.model_dump_json()))
    assert again.token_ids == sample.token_ids


# ------------------------------------------------------------------------------------------- tokenization
class CharTokenizer:
    """A fake HF tokenizer: one token per character, special markers as single tokens, a ChatML template."""

    SPECIAL = ("<|im_start|>", "<|im_end|>")

    def __init__(self, stable: bool = True) -> None:
        self.stable = stable

    def apply_chat_template(self, messages, tools=None, add_generation_prompt=False, tokenize=False, **kwargs):
        assert tokenize is False
        parts = []
        if tools:
            parts.append(f"<|im_start|>system\ntools:{len(tools)}<|im_end|>\n")
        for i, m in enumerate(messages):
            content = m.get("content") or ""
            if not self.stable and m["role"] == "assistant" and i < len(messages) - 1:
                content = "[old]"  # rewrites earlier turns, like templates that drop past reasoning
            for tc in m.get("tool_calls") or ():
                content += f"<call {tc['function']['name']}>"
            parts.append(f"<|im_start|>{m['role']}\n{content}<|im_end|>\n")
        if add_generation_prompt:
            parts.append("<|im_start|>assistant\n")
        return "".join(parts)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        out, i = [], 0
        while i < len(text):
            for j, special in enumerate(self.SPECIAL):
                if text.startswith(special, i):
                    out.append(1000 + j)
                    i += len(special)
                    break
            else:
                out.append(ord(text[i]))
                i += 1
        return out

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return "".join(self.SPECIAL[t - 1000] if t >= 1000 else chr(t) for t in ids)


CONVERSATION = [
    {"role": "system", "content": "Be kind."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello?"},
    {"role": "user", "content": "Yes"},
    {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]},
    {"role": "tool", "content": "ok"},
    {"role": "assistant", "content": "Done."},
]


def _masked_text(tok: CharTokenizer, ids: Sequence[int], mask: Sequence[bool]) -> list[str]:
    runs, current = [], []
    for t, m in zip(ids, mask, strict=True):
        if m:
            current.append(t)
        elif current:
            runs.append(tok.decode(current))
            current = []
    if current:
        runs.append(tok.decode(current))
    return runs


def test_tokenize_sample_masks_only_assistant_bodies():
    tok = CharTokenizer()
    out = tokenize_sample(CONVERSATION, tok)
    assert out.input_ids == tok.encode(tok.apply_chat_template(CONVERSATION))
    assert _masked_text(tok, out.input_ids, out.assistant_mask) == [
        "Hello?<|im_end|>\n",
        "<call f><|im_end|>\n",
        "Done.<|im_end|>\n",
    ]
    assert len(out.spans) == len(CONVERSATION) and out.spans[-1][1] == len(out.input_ids)
    header = tok.encode("<|im_start|>assistant\n")
    start = out.spans[2][0]
    assert out.input_ids[start : start + len(header)] == header
    assert not any(out.assistant_mask[start : start + len(header)])
    assert out.logprobs is None


def test_tokenize_sample_from_trainer_sample_with_tools():
    group = rollout_group("mock", "nickname", ORACLE, 1)
    sample = to_trainer_sample(group.episodes[0])
    tok = CharTokenizer()
    out = tokenize_sample(sample, tok)
    full = tok.apply_chat_template(sample.messages, tools=sample.tools)
    assert out.input_ids == tok.encode(full)
    assert sum(out.assistant_mask) > 0
    masked = _masked_text(tok, out.input_ids, out.assistant_mask)
    assert len(masked) == sum(sample.policy_mask)
    assert all("customer" not in run.lower() or "<call" in run for run in masked)


def test_tokenize_sample_passes_sampled_token_ids_through():
    tok = CharTokenizer()
    sampled = tok.encode("Hello?<|im_end|>")  # what the policy emitted, without the template's newline
    token_ids: list[Any] = [None] * len(CONVERSATION)
    logprobs: list[Any] = [None] * len(CONVERSATION)
    for k in (2, 4, 6):
        token_ids[k] = sampled if k == 2 else None
        logprobs[k] = [-0.1] * len(sampled) if k == 2 else None
    out = tokenize_sample(CONVERSATION, tok, token_ids=token_ids, logprobs=logprobs)
    start = out.spans[2][0] + len(tok.encode("<|im_start|>assistant\n"))
    assert out.input_ids[start : start + len(sampled)] == sampled
    assert all(out.assistant_mask[start : start + len(sampled)])
    assert out.input_ids[start + len(sampled)] == ord("\n") and not out.assistant_mask[start + len(sampled)]
    assert out.logprobs is None  # not every policy turn carried logprobs
    # Custom ids that differ from the text are used verbatim: nothing is re-tokenised.
    token_ids[2] = [7, 8, 9]
    logprobs = [None, None, [-1.0, -2.0, -3.0], None, [0.0] * 8, None, [0.0] * 15]
    token_ids[4] = tok.encode("<call f><|im_end|>")
    token_ids[6] = tok.encode("Done.<|im_end|>\n")
    logprobs[4] = [-0.5] * len(token_ids[4])
    logprobs[6] = [-0.5] * len(token_ids[6])
    out = tokenize_sample(CONVERSATION, tok, token_ids=token_ids, logprobs=logprobs)
    start = out.spans[2][0] + len(tok.encode("<|im_start|>assistant\n"))
    assert out.input_ids[start : start + 3] == [7, 8, 9]
    assert out.logprobs is not None and out.logprobs[start : start + 3] == [-1.0, -2.0, -3.0]
    assert len(out.logprobs) == len(out.input_ids)
    assert all(lp == 0.0 for lp, m in zip(out.logprobs, out.assistant_mask, strict=True) if not m)


def test_tokenize_sample_rejects_unstable_templates_and_bad_lists():
    with pytest.raises(ChatTemplateError, match="not prefix-stable at message 3"):
        tokenize_sample(CONVERSATION, CharTokenizer(stable=False))
    with pytest.raises(ValueError, match="policy_mask has 2 entries for 7 messages"):
        tokenize_sample(CONVERSATION, CharTokenizer(), policy_mask=[True, False])
    bad = [None, None, [1, 2], None, None, None, None]
    with pytest.raises(ValueError, match="2 token ids"):
        tokenize_sample(CONVERSATION, CharTokenizer(), token_ids=bad, logprobs=[None, None, [0.0], *[None] * 4])


# ------------------------------------------------------------------------------------------- batch API
def test_async_env_batch_runs_64_envs_to_completion(mock_domain):
    batch = AsyncEnvBatch.from_domain(mock_domain, 64)
    policy = OracleBatchPolicy(mock_domain)
    sizes: list[int] = []

    def recording(conversations):
        sizes.append(len(conversations))
        assert all(c[0]["role"] == "system" and c[1]["role"] == "user" for c in conversations)
        return policy(conversations)

    episodes = batch.run(recording)
    assert len(episodes) == 64
    assert all(ep.reward == 1.0 and ep.termination == "user_stop" for ep in episodes)
    assert sorted(ep.task_id for ep in episodes) == sorted(
        batch.envs[i].tasks[i % len(batch.envs[i].tasks)].id for i in range(64)
    )
    # Tasks have 1 or 2 gold actions: envs finish at different steps and drop out of the policy calls.
    assert sizes[0] == 64 and sizes[-1] < 64 and sizes == sorted(sizes, reverse=True)
    assert batch.all_done


async def test_async_env_batch_auto_reset_refills_from_the_queue(mock_domain):
    batch = AsyncEnvBatch.from_domain(mock_domain, 8)
    tasks = list(mock_domain.tasks)
    jobs = [BatchJob(tasks[i % len(tasks)], seed=i, trial=i // len(tasks)) for i in range(50)]
    sizes: list[int] = []

    async def policy(conversations):
        sizes.append(len(conversations))
        await asyncio.sleep(0)
        return OracleBatchPolicy(mock_domain)(conversations)

    seen = []
    episodes = await batch.arun(policy, jobs, on_episode=seen.append)
    assert len(episodes) == 50 == len(seen)
    assert all(ep.reward == 1.0 for ep in episodes)
    assert {(ep.task_id, ep.trial) for ep in episodes} == {(j.task_id, j.trial) for j in jobs}
    assert max(sizes) == 8 and sizes.count(8) > 3  # the batch stays full while the queue lasts
    with pytest.raises(ValueError, match="need auto_reset=True"):
        await batch.arun(policy, jobs, auto_reset=False)


def test_async_env_batch_bad_action_ends_only_that_episode(mock_domain):
    batch = AsyncEnvBatch.from_domain(mock_domain, 4, task_ids=["close_empty"])
    oracle = OracleBatchPolicy(mock_domain)

    def policy(conversations):
        actions = oracle(conversations)
        if len(conversations) == 4:
            actions[1] = 12345  # not an assistant turn
        return actions

    episodes = batch.run(policy)
    by_status = sorted(ep.termination for ep in episodes)
    assert by_status == ["invalid_action", "user_stop", "user_stop", "user_stop"]
    failed = next(ep for ep in episodes if ep.termination == "invalid_action")
    assert "AssistantMessage" in failed.error and failed.reward == 0.0 and not failed.is_infra_failure
    assert sum(ep.reward for ep in episodes) == 3.0
    # The bad turn counts against the policy: 4 episodes in the metrics, 3 of them passed.
    summary = summarize(episodes)
    assert summary.episodes == 4 and summary.infra_failures == 0 and summary.pass_hat_k[1] == 0.75
    with pytest.raises(ValueError, match="returned 1 actions for 4 conversations"):
        batch.run(lambda convs: ["hi"])


async def test_async_env_batch_low_level_step_api(mock_domain):
    batch = AsyncEnvBatch.from_domain(mock_domain, 3, include_system=False)
    results = await batch.areset(seeds=[0, 1, 2], options=[{"task_id": "close_empty"}] * 3)
    assert [r.observation[0]["role"] for r in results] == ["user"] * 3
    assert batch.active == (0, 1, 2)
    assert batch.conversation(0)[0]["role"] == "user"
    call = gold_turn(mock_domain.task("close_empty"), 0)
    step = await batch.astep({0: call, 2: "Anything else?"})
    assert set(step) == {0, 2} and not step[0].done and not step[2].done
    step = await batch.astep({0: "All done."})
    assert step[0].done and step[0].terminated and step[0].reward == 1.0
    assert batch.active == (1, 2)
    with pytest.raises(ValueError, match="no episode in progress"):
        await batch.astep({0: "hello"})
    assert batch.episode(0).reward == 1.0
    with pytest.raises(TypeError, match="not a ToolUseEnv"):
        AsyncEnvBatch([object()])
    with pytest.raises(ValueError, match="at least one env"):
        AsyncEnvBatch([])


# ------------------------------------------------------------------------------------------- gymnasium vector
def _close_call() -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "c0",
                "type": "function",
                "function": {"name": "close_account", "arguments": '{"account_id": "acc_3001", "reason": "fees"}'},
            }
        ],
    }


def test_sync_vector_env_steps_conversations():
    venv = make_vector_env("mock", 3, task_ids=["close_empty"])
    try:
        obs, info = venv.reset(seed=[1, 2, 3])
        assert isinstance(obs, tuple) and len(obs) == 3 and obs[0][0]["role"] == "user"
        assert list(info["task_id"]) == ["close_empty"] * 3
        obs, reward, term, trunc, info = venv.step((_close_call(), "Shall I check?", _close_call()))
        assert list(reward) == [0.0, 0.0, 0.0] and not term.any()
        obs, reward, term, trunc, info = venv.step(("All done.", "All done.", "Anything else?"))
        assert list(reward) == [1.0, 0.0, 0.0]
        assert list(term) == [True, True, False]
        assert info["reward_info"][0].reward == 1.0
    finally:
        venv.close()


def test_async_vector_env_needs_no_shared_memory():
    from gymnasium.vector import AsyncVectorEnv

    venv = make_vector_env("mock", 2, asynchronous=True, task_ids=["close_empty"])
    try:
        assert isinstance(venv, AsyncVectorEnv)
        venv.reset(seed=[0, 1])
        venv.step((_close_call(), _close_call()))
        _, reward, term, _, _ = venv.step(("All done.", "All done."))
        assert list(reward) == [1.0, 1.0] and term.all()
    finally:
        venv.close()
    # Conversations are not fixed-shape arrays, so Gymnasium's shared-memory transport cannot hold them.
    with pytest.raises(ValueError, match="shared_memory"):
        AsyncVectorEnv([functools.partial(ToolUseEnv, "mock")] * 2)


# ------------------------------------------------------------------------------------------- TRL glue (no TRL)
def test_step_prompts_and_env_step_reward():
    domain = load_domain("mock")
    rows = step_prompts(domain, steps="all")
    expected = sum(len(t.actions) + (1 if t.outputs else 0) for t in domain.tasks.values())
    assert len(rows) == expected
    row = next(r for r in rows if r["task_id"] == "transfer_50" and r["step"] == 1)
    assert [m["role"] for m in row["prompt"]] == ["system", "user", "assistant", "tool"]
    reward = EnvStepReward(domain)
    args = '"from_account_id": "acc_1001", "to_account_id": "acc_1002"'
    gold = '{"name": "transfer_funds", "arguments": {' + args + ', "amount": 50}}'
    wrong = '{"name": "transfer_funds", "arguments": {' + args + ', "amount": 5}}'
    conversational = [[{"role": "assistant", "content": f"<tool_call>{gold}</tool_call>"}]]
    assert reward(None, [gold, wrong, "Sure!", ""], task_id=["transfer_50"] * 4, step=[1] * 4) == [1.0, 0.0, 0.0, 0.0]
    assert reward(None, conversational, task_id=["transfer_50"], step=[1]) == [1.0]
    assert reward.rewards == [1.0, 0.0, 0.0, 0.0, 1.0]
    # Every gold turn scores 1 at its own step (the reward agrees with the verifier on gold play).
    for r in rows:
        task = domain.task(r["task_id"])
        turn = gold_turn(task, r["step"]).to_openai()
        assert reward.score(r["task_id"], r["step"], [turn]) == 1.0, r
    shaped = EnvStepReward(domain, reward_mode="shaped")
    last = next(r for r in rows if r["task_id"] == "balance_and_nickname" and r["step"] == 2)
    assert shaped.score("balance_and_nickname", last["step"], "Your nickname is set.") == 0.5
    with pytest.raises(ValueError, match="out of range"):
        reward.score("transfer_50", 7, gold)
    with pytest.raises(ValueError, match="2 completions, 1 task ids"):
        reward(None, [gold, gold], task_id=["transfer_50"], step=[1])
    assert NoopAgent().name == "noop"


def test_rollout_groups_example_runs_offline(tmp_path, capsys):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "rollout_groups.py"
    spec = importlib.util.spec_from_file_location("apigen_example_rollout_groups", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "samples.jsonl"
    assert module.main(["--demo", "-G", "3", "--tasks", "2", "--out", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 6
    assert all(s["policy_mask"] == [m["role"] == "assistant" for m in s["messages"]] for s in lines)
    assert {s["task_id"] for s in lines} == {"transfer_50", "nickname"}
    assert "pass^k: k=1" in capsys.readouterr().out
