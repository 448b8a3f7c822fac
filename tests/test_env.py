from __future__ import annotations

import asyncio
import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import apigen_envs
from apigen_envs.baselines.noop import NoopAgent
from apigen_envs.baselines.oracle import OracleAgent
from apigen_envs.env import ToolUseEnv
from apigen_envs.errors import EnvBugError, EnvStateError, InvalidActionError
from apigen_envs.messages import AssistantMessage, ToolCall, tool_call
from apigen_envs.protocols import AgentContext
from apigen_envs.registry import GYM_IDS, list_domains
from apigen_envs.simulators.scripted_user import ScriptedUser
from apigen_envs.testing import run_episode

REGISTERED = [env_id for env_id, domain in GYM_IDS.items() if domain in list_domains()]


@pytest.mark.parametrize("env_id", REGISTERED)
def test_check_env_passes_on_every_registered_id(env_id):
    env = gym.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped, skip_render_check=True)
    assert env.unwrapped.domain.name == GYM_IDS[env_id]


@pytest.mark.parametrize(
    "task_id", ["transfer_50", "nickname", "close_empty", "balance_and_nickname", "split_transfer"]
)
def test_oracle_passes_and_noop_fails_every_mock_task(mock_env, task_id):
    assert run_episode(mock_env, OracleAgent(), task_id=task_id)[0] == 1.0
    assert mock_env.termination == "user_stop"
    assert run_episode(mock_env, NoopAgent(), task_id=task_id)[0] == 0.0
    assert mock_env.reward_info.db_match is False


def play(env, actions, task_id, user=None):
    env.reset(seed=1, options={"task_id": task_id})
    result = None
    for action in actions:
        result = env.step(action)
        if result[2] or result[3]:
            break
    return result


def test_alternative_path_reaching_same_state_scores_one(mock_env):
    # gold: one transfer of 120; the agent splits it in two and looks things up first
    actions = [
        tool_call("get_account_details", {"account_id": "acc_1001"}),
        tool_call("transfer_funds", {"from_account_id": "acc_1001", "to_account_id": "acc_2001", "amount": 70}),
        tool_call("transfer_funds", {"from_account_id": "acc_1001", "to_account_id": "acc_2001", "amount": 50}),
        "Done, anything else?",
        "Great, goodbye.",
    ]
    obs, reward, terminated, truncated, info = play(mock_env, actions, "split_transfer")
    assert terminated and not truncated and reward == 1.0 and info["reward_info"].db_match


def test_wrong_amount_fails_and_breakdown_is_reported(mock_env):
    actions = [
        tool_call("transfer_funds", {"from_account_id": "acc_1001", "to_account_id": "acc_2001", "amount": 100}),
        "Done.",
    ]
    _, reward, terminated, _, info = play(mock_env, actions, "split_transfer")
    assert terminated and reward == 0.0
    ri = info["reward_info"]
    assert ri.db_match is False and ri.changed_rows == 2 and ri.gold_rows == 2 and ri.matched_rows == 0


def test_required_outputs_must_appear(mock_env):
    call = tool_call("set_account_nickname", {"account_id": "acc_1002", "nickname": "rainy day"})
    assert play(mock_env, [call, "Renamed."], "balance_and_nickname")[1] == 0.0
    assert mock_env.reward_info.outputs == {"80.5": False}
    assert play(mock_env, [call, "Renamed; the balance was 80 dollars."], "balance_and_nickname")[1] == 0.0
    assert play(mock_env, [call, "Renamed; the balance is 80.5."], "balance_and_nickname")[1] == 1.0


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (ToolCall(id="c", name="transfer_fund", arguments={}), "unknown tool 'transfer_fund'. Did you mean"),
        (ToolCall(id="c", name="get_account_details", arguments='{"account_id": '), "not valid JSON"),
        (ToolCall(id="c", name="get_account_details", arguments={"account_id": 7}), "valid string"),
        (ToolCall(id="c", name="get_account_details", arguments={}), "Field required"),
        (ToolCall(id="c", name="get_account_details", arguments={"account_id": "nope"}), "account nope not found"),
    ],
)
def test_bad_tool_calls_become_error_observations(mock_env, mock_domain, call, expected):
    obs, _ = mock_env.reset(options={"task_id": "transfer_50"})
    obs, reward, terminated, truncated, _ = mock_env.step(AssistantMessage(tool_calls=(call,)))
    assert obs[-1]["role"] == "tool" and expected in obs[-1]["content"]
    assert mock_env.messages[-1].error and not terminated and reward == 0.0
    assert mock_env.view.changes() == {}
    # the env keeps working after the error and the episode can still be solved
    assert run_episode(mock_env, OracleAgent(), task_id="transfer_50")[0] == 1.0
    assert mock_domain.snapshot.view().changes() == {}


@pytest.mark.parametrize("action", [42, None, ["hi"], {"role": "user", "content": "x"}, "", {"content": None}])
def test_actions_that_are_not_assistant_turns_raise(mock_env, action):
    mock_env.reset(options={"task_id": "transfer_50"})
    before = mock_env.messages
    with pytest.raises(InvalidActionError):
        mock_env.step(action)
    assert mock_env.messages == before and not mock_env.done


def test_openai_dict_actions_work(mock_env):
    mock_env.reset(options={"task_id": "nickname"})
    action = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "x1",
                "type": "function",
                "function": {
                    "name": "set_account_nickname",
                    "arguments": '{"account_id": "acc_2001", "nickname": "daily"}',
                },
            }
        ],
    }
    obs, *_ = mock_env.step(action)
    assert obs[-1]["tool_call_id"] == "x1" and '"nickname": "daily"' in obs[-1]["content"]
    assert mock_env.action_space.contains(action)


def test_step_before_reset_and_after_end(mock_domain):
    env = ToolUseEnv(mock_domain)
    with pytest.raises(EnvStateError, match="before reset"):
        env.step("hello")
    env.reset(options={"task_id": "nickname"})
    env.step("Bye.")
    assert env.done
    with pytest.raises(EnvStateError, match="ended"):
        env.step("hello")


def test_terminal_tool_ends_and_is_scored(mock_env):
    call = tool_call("transfer_to_human_agents", {"summary": "wants a loan"})
    _, reward, terminated, truncated, info = play(mock_env, [call], "nickname")
    assert terminated and not truncated and info["termination"] == "terminal_tool" and reward == 0.0


def test_max_turns_truncates_and_scores_zero_with_the_breakdown(mock_domain):
    # Both peers score an episode that neither side ended as a failure, even when its state is right.
    env = ToolUseEnv(mock_domain, max_turns=2)
    env.reset(options={"task_id": "nickname"})
    env.step(tool_call("set_account_nickname", {"account_id": "acc_2001", "nickname": "daily"}))
    _, reward, terminated, truncated, info = env.step(tool_call("get_account_details", {"account_id": "acc_2001"}))
    assert truncated and not terminated and info["termination"] == "max_turns" and reward == 0.0
    assert env.reward_info is not None and env.reward_info.db_match is True
    assert env.reward_info.reward == 0.0 and "max_turns" in (env.reward_info.note or "")


def test_env_bug_is_recorded_or_raised_in_strict_mode(mock_domain):
    from apigen_envs.domain import Domain
    from apigen_envs.tools import ToolSet

    tools = ToolSet(list(mock_domain.tools))

    @tools.tool(mutates=True)
    def broken(db, account_id: str) -> str:
        """Write then crash.

        Args:
            account_id: An account.
        """
        db.accounts.edit(account_id)["balance"] = 0.0
        raise ZeroDivisionError("oops")

    domain = Domain("mock2", mock_domain.snapshot, tools, "policy", mock_domain.tasks)
    env = ToolUseEnv(domain)
    env.reset(options={"task_id": "nickname"})
    _, reward, terminated, _, info = env.step(tool_call("broken", {"account_id": "acc_2001"}))
    assert terminated and info["termination"] == "env_error" and "ZeroDivisionError" in info["error"]
    assert env.view.changes() == {}  # the partial write was rolled back
    assert env.to_episode().is_infra_failure
    strict = ToolUseEnv(domain, strict=True)
    strict.reset(options={"task_id": "nickname"})
    with pytest.raises(EnvBugError, match="oops"):
        strict.step(tool_call("broken", {"account_id": "acc_2001"}))


def test_same_seed_same_episode(mock_domain):
    def episode(seed):
        env = ToolUseEnv(mock_domain)
        obs, info = env.reset(seed=seed)
        agent = OracleAgent()
        ctx = AgentContext(info["system_prompt"], tuple(info["tools"]), task=env.task, seed=seed)
        done = False
        while not done:
            obs, reward, term, trunc, _ = env.step(agent.act(env.messages, ctx))
            done = term or trunc
        return env.task.id, obs, reward

    assert episode(7) == episode(7)
    chosen = {episode(s)[0] for s in range(30)}
    assert len(chosen) == 5  # uniform choice reaches every task, including the last one


def test_async_twins_match_sync(mock_domain):
    async def run():
        env = ToolUseEnv(mock_domain)
        obs, info = await env.areset(seed=3, options={"task_id": "transfer_50"})
        ctx = AgentContext(info["system_prompt"], tuple(info["tools"]), task=env.task)
        agent = OracleAgent()
        done = False
        while not done:
            obs, reward, term, trunc, _ = await env.astep(await agent.aact(env.messages, ctx))
            done = term or trunc
        return obs, reward

    obs, reward = asyncio.run(run())
    env = ToolUseEnv(mock_domain)
    sync_reward, messages = run_episode(env, OracleAgent(), task_id="transfer_50", seed=3)
    assert reward == sync_reward == 1.0
    assert list(obs) == [m.to_openai() for m in messages]


def test_user_failure_is_recorded(mock_domain):
    class DeadUser(ScriptedUser):
        def respond(self, task, conversation, *, seed=None):
            if conversation:
                raise ConnectionError("server down")
            return super().respond(task, conversation, seed=seed)

    env = ToolUseEnv(mock_domain, user=DeadUser())
    env.reset(options={"task_id": "nickname"})
    with pytest.raises(ConnectionError):
        env.step("Hello?")
    assert env.done and env.termination == "user_error"
    assert env.to_episode().is_infra_failure


def test_episode_record_and_render(mock_domain):
    env = ToolUseEnv(mock_domain, render_mode="ansi")
    run_episode(env, OracleAgent(), task_id="transfer_50", seed=5)
    ep = env.to_episode(trial=2, agent="oracle")
    assert ep.episode_id == "mock/transfer_50/2" and ep.passed and ep.seed == 5
    assert {d["key"] for d in ep.diff} == {"acc_1001", "acc_1002"}
    again = type(ep).model_validate_json(ep.model_dump_json())
    assert again == ep
    text = env.render()
    assert "transfer_funds" in text and "reward 1.0" in text


def test_make_helpers_and_did_you_mean():
    assert apigen_envs.make("mock").domain.name == "mock"
    assert apigen_envs.make("apigen/Mock-v0").unwrapped.domain.name == "mock"
    with pytest.raises(apigen_envs.errors.DomainNotFoundError, match="Did you mean 'mock'"):
        apigen_envs.load_domain("mok")
    with pytest.raises(apigen_envs.errors.DomainNotFoundError, match="Did you mean"):
        apigen_envs.make("apigen/Mok-v0")
    with pytest.raises(apigen_envs.errors.DomainNotFoundError, match="Did you mean 'transfer_50'"):
        ToolUseEnv("mock").reset(options={"task_id": "transfer_5"})


def test_third_party_domain_by_import_path_and_data_dir(tmp_path, monkeypatch):
    import shutil

    from apigen_envs.domains import mock

    shutil.copytree(mock.DATA, tmp_path / "mock")
    monkeypatch.setenv("APIGEN_DATA_DIR", str(tmp_path))
    domain = apigen_envs.load_domain("apigen_envs.domains.mock:load")
    assert domain.source == str((tmp_path / "mock").resolve())
    assert apigen_envs.load_domain("apigen_envs.domains.mock:load") is domain
    env = ToolUseEnv("apigen_envs.domains.mock:load")
    assert run_episode(env, OracleAgent(), task_id="nickname")[0] == 1.0


def test_corrupt_data_dir_gives_clear_error(tmp_path):
    from apigen_envs.domains import mock
    from apigen_envs.errors import DataFileError

    (tmp_path / "db.json").write_text('{"customers": {', encoding="utf-8")
    with pytest.raises(DataFileError, match=r"db.json:1:\d+: invalid JSON"):
        mock.load(tmp_path)
    (tmp_path / "db.json").write_text('{"customers": {"x": {"customer_id": 3}}}', encoding="utf-8")
    with pytest.raises(DataFileError, match="db.json: expected a JSON object with 'customers' and 'accounts'"):
        mock.load(tmp_path)
    (tmp_path / "db.json").write_text('{"customers": {"x": {"customer_id": 3}}, "accounts": {}}', encoding="utf-8")
    with pytest.raises(DataFileError, match="row 'x'"):
        mock.load(tmp_path)


def test_bad_reset_options_leave_the_env_as_it_was(mock_env):
    mock_env.reset(seed=1, options={"task_id": "nickname"})
    before = (mock_env.task.id, mock_env.messages)
    with pytest.raises(ValueError, match="unknown reset options"):
        mock_env.reset(options={"task": "transfer_50"})
    with pytest.raises(apigen_envs.errors.DomainNotFoundError):
        mock_env.reset(seed=2, options={"task_id": "nope"})
    with pytest.raises(IndexError):
        mock_env.reset(options={"task_index": 99})
    assert (mock_env.task.id, mock_env.messages) == before
