import asyncio
import json

import pytest

from apigen_envs.baselines.act import ActAgent
from apigen_envs.baselines.fewshot import FewShotAgent, load_examples
from apigen_envs.baselines.react import ReActAgent, parse_action
from apigen_envs.baselines.tool_calling import EMPTY_REPLY, PLAIN_LANGUAGE_NUDGE, ToolCallingAgent
from apigen_envs.env import ToolUseEnv
from apigen_envs.errors import DataFileError, LLMError
from apigen_envs.fake_server import ScriptedServer
from apigen_envs.llm import LLMConfig, OpenAIClient, ScriptedLLM
from apigen_envs.messages import AssistantMessage, ToolCall, ToolMessage, Usage, UserMessage
from apigen_envs.protocols import Agent, AgentContext
from apigen_envs.registry import load_domain
from apigen_envs.simulators.llm_user import LLMUser

DOMAIN = load_domain("mock")
TOOLS = DOMAIN.tools.schemas()
CTX = AgentContext(system_prompt="You are a bank agent.", tools=TOOLS, seed=17, extra={"temperature": 0.2})
CONV = [UserMessage(content="Please move $50 from acc_1001 to acc_1002. I'm ana@example.com.")]

TRANSFER_ARGS = {"from_account_id": "acc_1001", "to_account_id": "acc_1002", "amount": 50}
USER_LINES = [
    "Hi, I'd like to move $50 from acc_1001 to acc_1002.",
    "My email is ana@example.com.",
    "Yes, please do it.",
    "Great, thanks! ###STOP###",
]
AGENT_REPLIES = [
    "Sure, what's your email address?",
    '```json\n{"name": "find_customer_by_email", "arguments": {"email": "ana@example.com"}}\n```',
    "I found your profile. Shall I move $50 from acc_1001 to acc_1002?",
    {"tool_calls": [{"id": "tc1", "function": {"name": "transfer_funds", "arguments": json.dumps(TRANSFER_ARGS)}}]},
    "Done: $50 has been moved to acc_1002.",
]


def run_episode(env: ToolUseEnv, agent, task_id: str, seed: int) -> float:
    _obs, info = env.reset(seed=seed, options={"task_id": task_id})
    context = AgentContext(system_prompt=info["system_prompt"], tools=tuple(info["tools"]), seed=seed)
    reward, done = 0.0, False
    while not done:
        _obs, reward, terminated, truncated, _info = env.step(agent.act(env.messages, context))
        done = terminated or truncated
    return reward


async def arun_episode(env: ToolUseEnv, agent, task_id: str, seed: int) -> float:
    _obs, info = await env.areset(seed=seed, options={"task_id": task_id})
    context = AgentContext(system_prompt=info["system_prompt"], tools=tuple(info["tools"]), seed=seed)
    reward, done = 0.0, False
    while not done:
        _obs, reward, terminated, truncated, _info = await env.astep(await agent.aact(env.messages, context))
        done = terminated or truncated
    return reward


# ----------------------------------------------------------------------------- tool calling
def test_tool_calling_agent_request_and_usage():
    llm = ScriptedLLM(['{"name": "find_customer_by_email", "arguments": {"email": "ana@example.com"}}'])
    agent = ToolCallingAgent(llm)
    assert isinstance(agent, Agent)
    msg = agent.act(CONV, CTX)
    assert msg.tool_calls[0].name == "find_customer_by_email" and msg.usage is not None
    req = llm.requests[0]
    assert req.seed == 17 and req.temperature == 0.2
    assert req.messages[0] == {"role": "system", "content": "You are a bank agent."}
    assert req.tools is not None and {t["function"]["name"] for t in req.tools} == set(DOMAIN.tools.names)
    assert agent.public()["name"] == "tool_calling"


def test_tool_calling_nudge_after_tool_result_only():
    llm = ScriptedLLM(["Your balance is 80.5.", "ok"])
    conv = [
        *CONV,
        AssistantMessage(tool_calls=(ToolCall(id="a", name="get_account_details", arguments={}),)),
        ToolMessage(tool_call_id="a", name="get_account_details", content="{}"),
    ]
    ToolCallingAgent(llm).act(conv, CTX)
    assert llm.requests[0].messages[-1] == {"role": "system", "content": PLAIN_LANGUAGE_NUDGE}
    ToolCallingAgent(llm, nudge=None).act(conv, CTX)
    assert llm.requests[1].messages[-1]["role"] == "tool"


@pytest.mark.parametrize("reply", ["", {"content": None}, AssistantMessage(content="   ")])
def test_tool_calling_empty_reply_asks_to_repeat(reply):
    msg = ToolCallingAgent(ScriptedLLM([reply])).act(CONV, CTX)
    assert msg.content == EMPTY_REPLY and not msg.tool_calls and msg.usage is not None


def test_tool_calling_malformed_outputs_do_not_crash():
    replies = [
        '{"name": "drop_database", "arguments": {}}',  # unknown tool in text: stays text
        '{"name": "transfer_funds", "arguments": "{amount: fifty"}',  # bad JSON args: kept raw
        "{{{ not json",
    ]
    agent = ToolCallingAgent(ScriptedLLM(replies))
    unknown = agent.act(CONV, CTX)
    assert unknown.tool_calls == () and "drop_database" in (unknown.content or "")
    raw = agent.act(CONV, CTX)
    assert raw.tool_calls[0].arguments == "{amount: fifty"
    assert agent.act(CONV, CTX).content == "{{{ not json"


def test_duplicate_call_ids_are_made_unique():
    text = '{"name": "get_account_details", "arguments": {"account_id": "acc_1001"}}'
    first = ToolCallingAgent(ScriptedLLM([text])).act(CONV, CTX)
    conv = [*CONV, first, ToolMessage(tool_call_id=first.tool_calls[0].id, name="get_account_details", content="{}")]
    second = ToolCallingAgent(ScriptedLLM([text])).act(conv, CTX)
    assert second.tool_calls[0].id != first.tool_calls[0].id


def test_agent_propagates_llm_error():
    with pytest.raises(LLMError):
        ToolCallingAgent(ScriptedLLM([LLMError("down")])).act(CONV, CTX)


# ----------------------------------------------------------------------------- ReAct / Act
def test_react_agent_tool_call_and_respond():
    llm = ScriptedLLM(
        [
            'Thought: I need the customer id.\nAction: {"name": "find_customer_by_email", '
            '"arguments": {"email": "ana@example.com"}}',
            'Thought: tell them.\nAction: {"name": "respond", "arguments": {"content": "Found you!"}}',
        ]
    )
    agent = ReActAgent(llm)
    first = agent.act(CONV, CTX)
    assert first.tool_calls[0].name == "find_customer_by_email"
    assert first.tool_calls[0].arguments == {"email": "ana@example.com"}
    assert first.content == "I need the customer id." and first.usage is not None
    conv = [*CONV, first, ToolMessage(tool_call_id=first.tool_calls[0].id, name="x", content="cus_ana")]
    second = agent.act(conv, CTX)
    assert second.content == "Found you!" and not second.tool_calls
    req = llm.requests[1]
    assert req.tools is None and req.seed == 17
    assert "find_customer_by_email" in req.messages[0]["content"] and "Thought:" in req.messages[0]["content"]
    assert req.messages[-2]["role"] == "assistant" and "Action:" in req.messages[-2]["content"]
    assert req.messages[-1] == {"role": "user", "content": "API output: cus_ana"}
    assert first.tool_calls[0].id == "react_0"  # numbered by calls so far: unique within the episode


def test_act_agent_prompt_has_no_thoughts():
    llm = ScriptedLLM(['Action: {"name": "get_account_details", "arguments": {"account_id": "acc_1002"}}'])
    agent = ActAgent(llm)
    msg = agent.act(CONV, CTX)
    assert agent.name == "act" and msg.tool_calls[0].arguments == {"account_id": "acc_1002"}
    assert msg.content is None
    assert "Thought:" not in llm.requests[0].messages[0]["content"]


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("Hello, how can I help?", "text", "Hello, how can I help?"),
        ("Thought: greet them\n\nHello!", "text", "Hello!"),
        ("", "text", EMPTY_REPLY),
        ('Action: {"name": "respond", "arguments": {"content": ""}}', "text", EMPTY_REPLY),
        ('Action: {"name": "respond", "arguments": "plain words"}', "text", "plain words"),
        ("Action: respond to the customer", "text", "respond to the customer"),
        ('Action: {"name": "launch_rocket", "arguments": {}}', "call", "launch_rocket"),
        ('Action: {"name": "transfer_funds", "arguments": {"amount": }', "raw", "transfer_funds"),
        ('Action: {{"name": "think", "arguments": {{"thought": "x"}}}}', "call", "think"),
    ],
)
def test_parse_action_variants(text, kind, expected):
    msg = parse_action(text, "id1", DOMAIN.tools.names)
    if kind == "text":
        assert msg.content == expected and not msg.tool_calls
    else:
        assert msg.tool_calls[0].name == expected and msg.tool_calls[0].id == "id1"
        assert isinstance(msg.tool_calls[0].arguments, str) == (kind == "raw")


# ----------------------------------------------------------------------------- few-shot
def write_examples(path):
    episode = {
        "reward": 1.0,
        "messages": [
            {"role": "system", "content": "policy"},
            {"role": "user", "content": "Close acc_3001 please."},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "a", "function": {"name": "close_account", "arguments": '{"x": 1}'}}],
            },
            {"role": "tool", "tool_call_id": "a", "name": "close_account", "content": "closed " * 200},
            {"role": "assistant", "content": "EXAMPLE-ONE closed."},
        ],
    }
    failed = {"reward": 0.0, "messages": [{"role": "user", "content": "FAILED-EXAMPLE"}]}
    sharegpt = {
        "conversations": [
            {"from": "human", "value": "Rename acc_2001."},
            {"from": "function_call", "value": '{"name": "set_account_nickname"}'},
            {"from": "observation", "value": "ok"},
            {"from": "gpt", "value": "EXAMPLE-TWO renamed."},
        ]
    }
    path.write_text("\n".join(json.dumps(r) for r in (episode, failed, sharegpt)) + "\n")


def test_fewshot_agent_prepends_examples(tmp_path):
    path = tmp_path / "shots.jsonl"
    write_examples(path)
    examples = load_examples(path)
    assert len(examples) == 2 and "FAILED-EXAMPLE" not in "".join(examples)
    assert "..." in examples[0]  # long tool results are shortened
    llm = ScriptedLLM(["How can I help?"])
    agent = FewShotAgent(llm, path, k=2)
    msg = agent.act(CONV, CTX)
    assert msg.content == "How can I help?"
    system = llm.requests[0].messages[0]["content"]
    assert system.startswith("You are a bank agent.")
    assert "EXAMPLE-ONE" in system and "EXAMPLE-TWO" in system and "close_account" in system
    assert llm.requests[0].tools is not None
    assert agent.pick(3) == agent.pick(3) and len(agent.pick(None)) == 2
    assert agent.public()["k"] == 2


def test_fewshot_bad_inputs(tmp_path):
    with pytest.raises(DataFileError, match="not found"):
        FewShotAgent(ScriptedLLM([]), tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"something": 1}\n')
    with pytest.raises(DataFileError, match="record 1"):
        load_examples(bad)
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    with pytest.raises(DataFileError, match=":1"):
        load_examples(broken)
    only_failed = tmp_path / "failed.jsonl"
    only_failed.write_text(json.dumps({"reward": 0, "messages": [{"role": "user", "content": "x"}]}) + "\n")
    with pytest.raises(DataFileError, match="no usable"):
        load_examples(only_failed)
    assert len(load_examples(only_failed, only_passed=False)) == 1
    with pytest.raises(ValueError):
        FewShotAgent(ScriptedLLM([]), ["x"], k=0)


# ----------------------------------------------------------------------------- full episodes
def test_full_episode_scripted_llms():
    user_llm, agent_llm = ScriptedLLM(USER_LINES), ScriptedLLM(AGENT_REPLIES)
    env = ToolUseEnv("mock", user=LLMUser(user_llm))
    reward = run_episode(env, ToolCallingAgent(agent_llm), "transfer_50", seed=4)
    assert reward == 1.0 and env.termination == "user_stop"
    assert user_llm.calls == 4 and agent_llm.calls == 5
    assert all(r.seed is not None for r in user_llm.requests + agent_llm.requests)
    episode = env.to_episode()
    assert episode.user_usage.total_tokens > 0


def test_full_episode_react_agent():
    replies = [
        'Thought: ask.\nAction: {"name": "respond", "arguments": {"content": "What is your email?"}}',
        'Thought: look up.\nAction: {"name": "find_customer_by_email", "arguments": {"email": "ana@example.com"}}',
        'Action: {"name": "respond", "arguments": {"content": "Shall I move $50 from acc_1001 to acc_1002?"}}',
        "Thought: do it.\nAction: " + json.dumps({"name": "transfer_funds", "arguments": TRANSFER_ARGS}),
        'Action: {"name": "respond", "arguments": {"content": "Done."}}',
    ]
    env = ToolUseEnv("mock", user=LLMUser(ScriptedLLM(USER_LINES)))
    assert run_episode(env, ReActAgent(ScriptedLLM(replies)), "transfer_50", seed=1) == 1.0


def test_stop_guard_keeps_episode_alive_until_agent_acts():
    # The customer tries to stop right after confirming; the guard makes it ask the agent to go ahead.
    user_llm = ScriptedLLM(["I want $50 moved from acc_1001 to acc_1002.", "Yes. ###STOP###", "###STOP###"])
    agent_llm = ScriptedLLM(
        [
            "Shall I move $50 from acc_1001 to acc_1002?",
            {"tool_calls": [{"id": "t", "function": {"name": "transfer_funds", "arguments": TRANSFER_ARGS}}]},
            "Done.",
        ]
    )
    env = ToolUseEnv("mock", user=LLMUser(user_llm))
    assert run_episode(env, ToolCallingAgent(agent_llm), "transfer_50", seed=2) == 1.0
    assert [m.content for m in env.messages if isinstance(m, UserMessage)][1] == "Yes."


def test_full_episode_through_openai_client_and_server():
    with ScriptedServer(USER_LINES) as user_server, ScriptedServer(AGENT_REPLIES) as agent_server:
        user = LLMUser(OpenAIClient(LLMConfig(model="user-model", base_url=user_server.base_url)))
        agent = ToolCallingAgent(OpenAIClient(LLMConfig(model="agent-model", base_url=agent_server.base_url)))
        env = ToolUseEnv("mock", user=user)
        reward = run_episode(env, agent, "transfer_50", seed=8)
        user_requests, agent_requests = user_server.requests, agent_server.requests
    assert reward == 1.0 and env.termination == "user_stop"
    assert len(agent_requests) == 5 and len(user_requests) == 4
    assert all(r["seed"] == 8 for r in agent_requests)
    assert all("seed" in r for r in user_requests)
    assert agent_requests[0]["model"] == "agent-model" and "tools" in agent_requests[0]
    assert "tools" not in user_requests[0]
    # The agent saw the tool result of its text-written call.
    assert any(m.get("role") == "tool" for m in agent_requests[2]["messages"])
    agent_msgs = [m for m in env.messages if isinstance(m, AssistantMessage)]
    assert all(m.usage is not None and m.usage.total_tokens > 0 for m in agent_msgs)


def test_async_episode_through_server():
    async def main() -> float:
        with ScriptedServer(USER_LINES) as user_server, ScriptedServer(AGENT_REPLIES) as agent_server:
            user_client = OpenAIClient(LLMConfig(model="u", base_url=user_server.base_url))
            agent_client = OpenAIClient(LLMConfig(model="a", base_url=agent_server.base_url))
            env = ToolUseEnv("mock", user=LLMUser(user_client))
            reward = await arun_episode(env, ToolCallingAgent(agent_client), "transfer_50", seed=3)
            await user_client.aclose()
            await agent_client.aclose()
            return reward

    assert asyncio.run(main()) == 1.0


def test_usage_recorded_on_agent_message():
    msg = ToolCallingAgent(ScriptedLLM([AssistantMessage(content="hi", usage=Usage(prompt_tokens=3))])).act(CONV, CTX)
    assert msg.usage == Usage(prompt_tokens=3)
