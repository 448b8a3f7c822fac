import asyncio

import pytest

from apigen_envs.errors import DataFileError, LLMError
from apigen_envs.llm import ScriptedLLM
from apigen_envs.messages import AssistantMessage, ToolCall, ToolMessage, Usage, UserMessage
from apigen_envs.protocols import UserSimulator
from apigen_envs.simulators.llm_user import (
    NUDGE,
    OPENING_FALLBACK,
    REPEAT_FALLBACK,
    LLMUser,
    flip_roles,
    split_markers,
    stop_guard,
)
from apigen_envs.task import Task, UserScenario

TASK = Task(
    id="t1",
    domain="mock",
    scenario=UserScenario(
        instruction="You are Ana (ana@example.com). Move $50 from acc_1001 to acc_1002.",
        persona="Polite and brief.",
        known_info="Your email is ana@example.com.",
        unknown_info="You do not know your customer id.",
    ),
)

AGENT_ASKS = [
    UserMessage(content="Hi, I want to move some money."),
    AssistantMessage(content="Sure. What is your email?"),
]


def call(name: str, cid: str = "c1") -> AssistantMessage:
    return AssistantMessage(tool_calls=(ToolCall(id=cid, name=name, arguments={}),))


def test_protocol_and_no_call_at_construction():
    llm = ScriptedLLM([])
    user = LLMUser(llm)
    assert isinstance(user, UserSimulator)
    assert llm.calls == 0
    assert user.public()["strategy"] == "llm"
    with pytest.raises(ValueError, match="unknown user strategy"):
        LLMUser(llm, "psychic")  # type: ignore[arg-type]
    with pytest.raises(DataFileError, match="user.md"):
        LLMUser(llm, guidelines_dir="/nonexistent/dir")


def test_prompt_roles_seed_and_usage():
    llm = ScriptedLLM(["My email is ana@example.com."])
    conversation = [
        *AGENT_ASKS,
        call("find_customer_by_email"),
        ToolMessage(tool_call_id="c1", name="find_customer_by_email", content="cus_ana"),
        AssistantMessage(content="Thanks, one moment."),
    ]
    turn = LLMUser(llm, temperature=0.7).respond(TASK, conversation, seed=9)
    assert turn.content == "My email is ana@example.com." and turn.stop is None
    assert turn.usage is not None and turn.usage.total_tokens > 0
    req = llm.requests[0]
    assert req.seed == 9 and req.temperature == 0.7 and req.tools is None
    system, *rest = req.messages
    assert system["role"] == "system"
    assert "Move $50" in system["content"] and "Polite and brief." in system["content"]
    assert "do not know your customer id" in system["content"] and "###STOP###" in system["content"]
    # Roles are flipped and tool traffic is hidden from the customer.
    assert [m["role"] for m in rest] == ["user", "assistant", "user"]
    assert rest[0]["content"].startswith("Agent: Hi! How can I help")
    assert rest[1]["content"] == "Hi, I want to move some money."
    assert rest[2]["content"] == "Agent: Sure. What is your email?\nAgent: Thanks, one moment."
    assert "cus_ana" not in str(rest)


def test_flip_roles_opening():
    # agent lines carry a speaker label so a small model does not mirror the greeting and play the agent
    assert flip_roles([], "Hello") == [{"role": "user", "content": "Agent: Hello"}]


@pytest.mark.parametrize(
    ("text", "content", "stop"),
    [
        ("Thanks, bye! ###STOP###", "Thanks, bye!", "stop"),
        ("###STOP###", "", "stop"),
        ("### stop ###", "", "stop"),
        ("###TRANSFER###", "", "transfer"),
        ("Fine. ###OUT-OF-SCOPE###", "Fine.", "out_of_scope"),
        ("###OUT_OF_SCOPE###", "", "out_of_scope"),
        ("Just text.", "Just text.", None),
        ("Customer: I want a refund.", "I want a refund.", None),
    ],
)
def test_split_markers(text, content, stop):
    assert split_markers(text) == (content, stop)


def test_markers_end_the_episode():
    conversation = [*AGENT_ASKS, call("transfer_funds"), AssistantMessage(content="Done. Anything else?")]
    conversation.insert(2, UserMessage(content="ana@example.com"))
    for text, stop in (("That's all, thanks. ###STOP###", "stop"), ("###TRANSFER###", "transfer")):
        turn = LLMUser(ScriptedLLM([text])).respond(TASK, conversation)
        assert turn.stop == stop and "###" not in turn.content


def test_transfer_marker_not_guarded():
    done = [*AGENT_ASKS, AssistantMessage(content="I will transfer you to a human agent.")]
    turn = LLMUser(ScriptedLLM(["###TRANSFER###"])).respond(TASK, done)
    assert turn.stop == "transfer"


def test_guard_stop_before_agent_spoke():
    assert stop_guard([], "", "stop") == (OPENING_FALLBACK, None)
    assert stop_guard([], "Hi, I need a transfer.", "stop") == ("Hi, I need a transfer.", None)
    # The opening never ends the episode: a marker there is rejected and, after retries, the template is said.
    turn = LLMUser(ScriptedLLM(["###STOP###"], cycle=True)).respond(TASK, [])
    assert turn.stop is None and turn.content == "Hi, I want to move $50 from acc_1001 to acc_1002."
    assert turn.meta is not None and turn.meta["opening"] == "template"


def test_guard_confirmation_with_stop_in_same_turn():
    conversation = [*AGENT_ASKS[:1], AssistantMessage(content="Shall I move $50 from acc_1001 to acc_1002?")]
    turn = LLMUser(ScriptedLLM(["Yes, please go ahead. ###STOP###"])).respond(TASK, conversation)
    assert turn.stop is None and turn.content == "Yes, please go ahead."


def test_guard_stop_after_confirmation_without_action():
    conversation = [
        UserMessage(content="Hi, I want to move money."),
        AssistantMessage(content="Shall I move $50 from acc_1001 to acc_1002?"),
        UserMessage(content="Yes, please."),
        AssistantMessage(content="Great, is there anything else?"),
    ]
    turn = LLMUser(ScriptedLLM(["No, thanks. ###STOP###"])).respond(TASK, conversation)
    assert turn.stop is None and turn.content == NUDGE
    # Once nudged, a further stop is respected (no endless loop with an agent that never acts).
    nudged = [*conversation, UserMessage(content=NUDGE), AssistantMessage(content="Anything else?")]
    assert LLMUser(ScriptedLLM(["###STOP###"])).respond(TASK, nudged).stop == "stop"


def test_guard_allows_stop_after_agent_acted():
    conversation = [
        UserMessage(content="Hi, I want to move money."),
        AssistantMessage(content="Shall I move $50?"),
        UserMessage(content="Yes."),
        call("transfer_funds"),
        ToolMessage(tool_call_id="c1", name="transfer_funds", content="ok"),
        AssistantMessage(content="Done."),
    ]
    assert stop_guard(conversation, "Thanks!", "stop") == ("Thanks!", "stop")
    # A closing line that is not a confirmation, after a non-question, is a real stop.
    assert stop_guard(conversation[:2] + [AssistantMessage(content="Done.")], "Bye", "stop") == ("Bye", "stop")


def test_empty_reply_asks_to_repeat():
    turn = LLMUser(ScriptedLLM([""])).respond(TASK, AGENT_ASKS)
    assert turn.content == REPEAT_FALLBACK and turn.stop is None


def test_react_strategy_says_only_the_response():
    reply = "Thought:\nThe agent wants my email; I know it.\n\nUser Response:\nIt's ana@example.com."
    llm = ScriptedLLM([reply])
    turn = LLMUser(llm, "react").respond(TASK, AGENT_ASKS)
    assert turn.content == "It's ana@example.com."
    assert "User Response:" in llm.requests[0].messages[0]["content"]
    # Without the label, a leading thought paragraph is dropped.
    turn = LLMUser(ScriptedLLM(["Thought: easy.\n\nana@example.com"]), "react").respond(TASK, AGENT_ASKS)
    assert turn.content == "ana@example.com"
    stop = LLMUser(ScriptedLLM(["Thought: done\nUser Response:\n###STOP###"]), "react")
    done = [*AGENT_ASKS, call("x"), AssistantMessage(content="All set.")]
    assert stop.respond(TASK, done).stop == "stop"


def test_verify_strategy_regenerates_until_consistent():
    texts = [
        "My customer id is cus_999.",  # invented fact
        "It asserts an id the situation does not give.\nVerdict: inconsistent",
        "My email is ana@example.com.",
        "Matches the situation.\nVerdict: consistent",
    ]
    llm = ScriptedLLM([AssistantMessage(content=t, usage=Usage(prompt_tokens=10, completion_tokens=1)) for t in texts])
    turn = LLMUser(llm, "verify", max_checks=3).respond(TASK, AGENT_ASKS, seed=100)
    assert turn.content == "My email is ana@example.com."
    assert llm.calls == 4
    assert [r.seed for r in llm.requests] == [100, 100, 101, 101]
    assert "cus_999" in llm.requests[1].messages[1]["content"]  # the verifier saw the candidate
    assert llm.requests[1].messages[0]["content"].startswith("# Checking")
    assert turn.usage == Usage(prompt_tokens=40, completion_tokens=4)  # summed over all four calls


def test_verify_gives_up_after_max_checks_and_unreadable_verdict_accepts():
    # Each reply answers the agent's email question (a reply that does not is regenerated anyway).
    a, b, c = (f"It's ana@example.com ({x})." for x in "abc")
    llm = ScriptedLLM([a, "Verdict: inconsistent", b, "Verdict: no", c])
    turn = LLMUser(llm, "verify", max_checks=2).respond(TASK, AGENT_ASKS)
    assert turn.content == c and llm.calls == 5
    llm = ScriptedLLM(["hello ana@example.com", "I am not sure."])
    assert LLMUser(llm, "verify").respond(TASK, AGENT_ASKS).content == "hello ana@example.com" and llm.calls == 2


def test_reflection_strategy_rewrites_after_failed_check():
    llm = ScriptedLLM(
        [
            "Sure, my id is cus_1. ###STOP###",
            "Invents an id and stops early. Verdict: inconsistent",
            "Reflection:\nI must not invent ids.\n\nResponse:\nMy email is ana@example.com.",
            "Verdict: consistent",
        ]
    )
    turn = LLMUser(llm, "reflection").respond(TASK, AGENT_ASKS, seed=5)
    assert turn.content == "My email is ana@example.com." and turn.stop is None
    reflect_prompt = llm.requests[2].messages
    assert reflect_prompt[0]["content"].startswith("# Improving")
    assert "Invents an id" in reflect_prompt[1]["content"]


def test_client_errors_propagate_as_llm_error():
    with pytest.raises(LLMError):
        LLMUser(ScriptedLLM([LLMError("server down")])).respond(TASK, [])


def test_async_respond_matches_sync():
    sync = LLMUser(ScriptedLLM(["I'd like to move $50 to my other account."])).respond(TASK, [], seed=1)
    llm = ScriptedLLM(["I'd like to move $50 to my other account."])
    turn = asyncio.run(LLMUser(llm).arespond(TASK, [], seed=1))
    assert turn == sync and llm.requests[0].seed == 1
