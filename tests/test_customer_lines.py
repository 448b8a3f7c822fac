"""The customer that states its business: opening line, role-confusion classifier, nudge rules."""

import pytest

from apigen_envs.fake_server import ScriptedServer
from apigen_envs.llm import LLMConfig, OpenAIClient, ScriptedLLM
from apigen_envs.messages import AssistantMessage, ToolCall, ToolMessage, UserMessage
from apigen_envs.registry import load_domain
from apigen_envs.simulators.customer_lines import (
    first_person,
    names_request,
    request_text,
    role_confusion,
    template_opening,
)
from apigen_envs.simulators.llm_user import NUDGE, LLMUser, fallback_line, stop_guard
from apigen_envs.task import Task, UserScenario

TASK = Task(
    id="t",
    domain="retail",
    scenario=UserScenario(
        instruction="Persona:\nYou are Wei.\n\nReason for call:\nYou want to cancel order #W1.",
        persona="You are Wei. You are calm.",
        reason_for_call="You want to cancel order #W1 because you no longer need it.",
        known_info="Your name is Wei Ivanov and your email is wei@example.com.",
    ),
)


ASKED = (
    UserMessage(content="Hi, I want to cancel order #W1."),
    AssistantMessage(content="Can you please provide your email address, so I can find your user id?"),
)
"""The customer's request and the agent's identity question."""


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("I'm sorry, but I don't have enough information to cancel your order.", "apologises_lacking_info"),
        ("Hi! How can I help you today?", "agent_speak"),
        ("I'd be happy to help you with that.", "agent_speak"),
        ("Let me check that for you.", "agent_speak"),
        ("I am sorry to hear that my flight HAT200 was cancelled.", "agent_speak"),
        ("Your order has been cancelled.", "agent_speak"),
        ("Could you please provide your order id?", "asks_customer_details"),
        ("What is your email address?", "asks_customer_details"),
        ("I don't have access to your account.", "apologises_lacking_info"),
        ("Sure, here's the first message: I want to cancel order #W1.", "meta_commentary"),
        ("As the customer, I would say that I want a refund.", "meta_commentary"),
        # Customer speech, including admitting a missing detail, is fine.
        ("Sorry, I don't have my order number at hand.", None),
        ("Let me check my email.", None),
        ("I need your help to cancel an order.", None),
        ("My email is wei@example.com.", None),
        ("Yes, please go ahead.", None),
        ("", None),
    ],
)
def test_role_confusion_classifier(line, kind):
    assert role_confusion(line) == kind


def test_an_opening_that_acknowledges_someone_is_meta_commentary():
    assert role_confusion("Sure, I'd like to exchange the keyboard.", opening=True) == "meta_commentary"
    assert role_confusion("Certainly. I need to book a trip to Miami.", opening=True) == "meta_commentary"
    # Later in the conversation "Sure" answers the agent, which is fine.
    assert role_confusion("Sure, I'd like to exchange the keyboard.") is None
    assert role_confusion("I'm excited to help you with your upgrade.") == "agent_speak"


def test_greeting_oneself_by_name_is_agent_speak():
    from apigen_envs.simulators.customer_lines import customer_first_name

    assert customer_first_name(TASK) == "Wei"
    assert role_confusion("Hi there, Wei. I'm looking to return my laptop.", name="Wei") == "agent_speak"
    # Seen in the 40-episode measure: a letter to oneself, and the name as a form of address.
    letter = "Subject: Book a flight to Denver\n\nDear Wei Ivanov,\n\nI hope this finds you well."
    assert role_confusion(letter, name="Wei") == "agent_speak"
    assert role_confusion("I'm sorry, Wei Ivanov. I need the t-shirt in red.", name="Wei") == "agent_speak"
    # Introducing oneself is the customer's voice.
    for line in (
        "I'm Wei Ivanov, and I want to cancel order #W1.",
        "This is Wei. Cancel #W1, please.",
        "Sure, Wei Ivanov, wei@example.com.",
        "Yes, Wei Ivanov. My email is wei@example.com.",
        "My name is, Wei Ivanov.",
        "Hi, Wei here.",
    ):
        assert role_confusion(line, name="Wei") is None, line
    assert role_confusion("Hi, I'm Wei and I want to cancel an order.", name="Wei") is None


def test_echo_of_the_agent_is_confusion():
    agent = "Could you tell me the reason for cancelling order W1 today"
    assert role_confusion("could you tell me the reason for cancelling order W1 today?", [agent]) == "echo"
    assert role_confusion("I no longer need it.", [agent]) is None


def test_first_person_and_template_opening():
    assert first_person("You moved and want your address changed.") == "I moved and want my address changed."
    assert first_person("The agent may offer you a refund.") == "The agent may offer me a refund."
    # Seen in a fallback line of the 40-episode measure ("the address the store knows I by").
    assert first_person("The address the store knows you by.") == "The address the store knows me by."
    assert template_opening(TASK) == "Hi, I want to cancel order #W1 because I no longer need it."
    no_fields = Task(id="x", domain="mock", scenario=UserScenario(instruction="You are Ana. Move $50 to acc_2."))
    assert request_text(no_fields) == "Move $50 to acc_2."
    assert template_opening(no_fields) == "Hi, I want to move $50 to acc_2."


def test_names_request():
    assert names_request("Hi, I'd like to cancel an order.", TASK)
    assert not names_request("About order #W1 please.", TASK)  # an id alone does not say what is wanted
    swap = TASK.model_copy(
        update={"scenario": TASK.scenario.model_copy(update={"reason_for_call": "You want to swap the lamp."})}
    )
    assert names_request("I want to exchange my lamp for a red one.", swap)
    assert not names_request("Hi, I have a problem.", TASK)


def test_template_names_the_request_for_every_embedded_task():
    # The fallback must itself pass the measure, for every task that has a request.
    for name in ("retail", "airline"):
        for task in load_domain(name).task_list(None):
            opening = template_opening(task)
            assert names_request(opening, task), (task.id, opening)
            assert role_confusion(opening) is None, (task.id, opening)


def test_opening_uses_focused_prompt_and_keeps_a_good_line():
    llm = ScriptedLLM(['"Hello, I want to cancel my order W1, I don\'t need it anymore."'])
    turn = LLMUser(llm, temperature=0.7).respond(TASK, [], seed=3)
    assert turn.content == "Hello, I want to cancel my order W1, I don't need it anymore."
    assert turn.meta == {"opening": "model", "rejected": []}
    system, user = llm.requests[0].messages
    assert "first message" in system["content"] and "not the agent" in system["content"]
    assert "I want to cancel order #W1" in user["content"]  # the request, in the first person
    assert llm.requests[0].seed == 3 and llm.requests[0].temperature == 0.7


@pytest.mark.parametrize(
    "raw",
    [
        "Sure, here's the first message:\n\n\"Hi! I want to cancel my order W1, I don't need it anymore.\"",
        "Here is my message to the agent: Hi! I want to cancel my order W1, I don't need it anymore.",
        "Message: Hi! I want to cancel my order W1, I don't need it anymore.",
    ],
)
def test_opening_drops_a_preamble_about_the_message(raw):
    turn = LLMUser(ScriptedLLM([raw])).respond(TASK, [])
    assert turn.content == "Hi! I want to cancel my order W1, I don't need it anymore."
    assert turn.meta == {"opening": "model", "rejected": []}


def test_opening_regenerates_then_falls_back_to_template():
    bad = "I'm sorry, but I don't have enough information to cancel your order."
    llm = ScriptedLLM([bad, "Hi there.", "I want to cancel order W1."])
    turn = LLMUser(llm, max_regenerations=2).respond(TASK, [], seed=10)
    assert turn.content == "I want to cancel order W1." and turn.meta["opening"] == "model"
    assert [r["why"] for r in turn.meta["rejected"]] == ["apologises_lacking_info", "request_not_named"]
    assert [r.seed for r in llm.requests] == [10, 110, 210]
    llm = ScriptedLLM([bad], cycle=True)
    turn = LLMUser(llm, max_regenerations=1).respond(TASK, [])
    assert turn.content == template_opening(TASK) and turn.meta["opening"] == "template" and llm.calls == 2


def test_later_line_regenerated_with_reminder_then_fallback():
    conversation = [
        UserMessage(content="Hi, I want to cancel an order."),
        AssistantMessage(content="Sure. Could you give me your name and email to verify your identity?"),
    ]
    llm = ScriptedLLM(["Could you please provide your name and email?", "I'm Wei Ivanov, wei@example.com."])
    turn = LLMUser(llm).respond(TASK, conversation, seed=1)
    assert turn.content == "I'm Wei Ivanov, wei@example.com."
    assert turn.meta["rejected"][0]["why"] == "asks_customer_details" and not turn.meta["fallback"]
    assert "you are the CUSTOMER" in llm.requests[1].messages[-1]["content"]
    # Every sample confused: the fallback gives the known info the agent asked for.
    llm = ScriptedLLM(["How can I help you?"], cycle=True)
    turn = LLMUser(llm, max_regenerations=2).respond(TASK, conversation)
    assert turn.content == "My name is Wei Ivanov and my email is wei@example.com." and turn.meta["fallback"]
    assert llm.calls == 3
    assert fallback_line(TASK, [AssistantMessage(content="Anything else?")]).startswith("To repeat what I need")


def test_fake_server_episode_of_a_confused_model_stays_in_role():
    """Through the real HTTP client: a model that plays the agent never gets its lines said."""
    replies = ["How may I assist you today?"] * 3 + ["I want to cancel order W1, please."]
    with ScriptedServer(replies) as server:
        client = OpenAIClient(LLMConfig(model="scripted", base_url=server.base_url), api_key="x")
        turn = LLMUser(client, temperature=0.7).respond(TASK, [], seed=7)
        assert turn.content == template_opening(TASK)
        later = LLMUser(client).respond(TASK, [UserMessage(content=turn.content), AssistantMessage(content="Ok?")])
        assert later.content == "I want to cancel order W1, please."
        assert server.request_count == 4


PROPOSED = [
    UserMessage(content="Hi, I want to cancel order #W1."),
    AssistantMessage(content="I can cancel order #W1 for 'no longer needed'. Shall I proceed (yes/no)?"),
    UserMessage(content="Yes, please."),
]


def test_nudge_only_after_a_confirmed_proposal_not_acted_on():
    assert stop_guard([*PROPOSED, AssistantMessage(content="Great, anything else?")], "Bye", "stop") == (NUDGE, None)
    # Off in the peer profiles.
    assert stop_guard([*PROPOSED, AssistantMessage(content="Great!")], "Bye", "stop", nudges=False) == ("Bye", "stop")
    # The agent acted.
    acted = [
        *PROPOSED,
        AssistantMessage(tool_calls=(ToolCall(id="c", name="cancel_pending_order", arguments={}),)),
        ToolMessage(tool_call_id="c", name="cancel_pending_order", content="{}"),
        AssistantMessage(content="Done."),
    ]
    assert stop_guard(acted, "Thanks, bye", "stop") == ("Thanks, bye", "stop")


def test_no_nudge_after_refusal_question_or_nothing_proposed():
    refused = [*PROPOSED, AssistantMessage(content="Sorry, I cannot cancel a delivered order.")]
    assert stop_guard(refused, "Okay, bye.", "stop") == ("Okay, bye.", "stop")
    asked = [
        UserMessage(content="Hi."),
        AssistantMessage(content="Shall I look up your order?"),
        UserMessage(content="Yes, but how much would I get back?"),
        AssistantMessage(content="You would get $20 back."),
    ]
    assert stop_guard(asked, "Thanks.", "stop") == ("Thanks.", "stop")
    info = [
        UserMessage(content="What is the status of my order?"),
        AssistantMessage(content="It was delivered yesterday."),
        UserMessage(content="Ok thanks."),
        AssistantMessage(content="You're welcome."),
    ]
    assert stop_guard(info, "Bye.", "stop") == ("Bye.", "stop")


def test_llm_user_nudges_setting_is_recorded_and_used():
    conversation = [*PROPOSED, AssistantMessage(content="Great.")]
    assert LLMUser(ScriptedLLM(["Bye ###STOP###"])).respond(TASK, conversation).content == NUDGE
    user = LLMUser(ScriptedLLM(["Bye ###STOP###"]), nudges=False)
    assert user.public()["nudges"] is False
    assert user.respond(TASK, conversation).stop == "stop"


def test_measure_script_counts_openings_and_confusion():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "measure_customer.py"
    spec = importlib.util.spec_from_file_location("measure_customer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # A model that always plays the agent: every opening falls back to the template, no line is said confused.
    llm = ScriptedLLM(["How can I help you today?"], cycle=True)
    result = module.measure(llm, 4, temperature=0.7, seed=0, turns=1)
    assert result["episodes"] == 4 and result["opening_names_request"] == 1.0
    assert result["opening_by_template"] == 4 and result["said_lines_classified_confused"] == 0
    assert result["raw_rejections_by_kind"]["agent_speak"] > 0
    assert module.rescore(result)["rescored"] is True
    # Lines saved for another task under the same id (the sets were regenerated) are refused, not rescored.
    result["rows"][1]["task_digest"] = "0" * 16
    with pytest.raises(ValueError, match="other tasks"):
        module.rescore(result)
    del result["rows"][1]["task_digest"]
    with pytest.raises(ValueError, match="other tasks"):
        module.rescore(result)


def test_a_bare_yes_to_an_identity_question_is_regenerated_then_replaced():
    asked = ASKED
    llm = ScriptedLLM(["Yes.", "Sure, it's wei@example.com."])
    turn = LLMUser(llm).respond(TASK, asked)
    assert turn.content == "Sure, it's wei@example.com."
    assert turn.meta["rejected"] == [{"line": "Yes.", "why": "no_identity_given"}]
    turn = LLMUser(ScriptedLLM(["Yes."], cycle=True)).respond(TASK, asked)
    assert turn.content == "My name is Wei Ivanov and my email is wei@example.com."
    # Saying the detail is unknown is an answer; and a confirmation question is not an identity question.
    assert LLMUser(ScriptedLLM(["I don't remember my email."])).respond(TASK, asked).content.startswith("I don't")
    confirm = [*asked[:1], AssistantMessage(content="I found your account. Shall I cancel order #W1 (yes/no)?")]
    assert LLMUser(ScriptedLLM(["Yes."])).respond(TASK, confirm).content == "Yes."


def test_customer_first_name_is_found_for_every_embedded_task():
    from apigen_envs.simulators.customer_lines import customer_first_name

    for domain in ("retail", "airline"):
        for task in load_domain(domain).task_list(None):
            name = customer_first_name(task)
            assert name, (task.id, task.scenario.persona)
            user_ids = [
                a.arguments["user_id"]
                for a in task.actions
                if isinstance(a.arguments, dict) and isinstance(a.arguments.get("user_id"), str)
            ]
            # The gold calls' user ids start with the customer's first name (sara_doe_1 for Sara Doe).
            assert all(uid.startswith(name.lower()) for uid in user_ids), (task.id, name, user_ids)
    persona = Task(id="p", domain="retail", scenario=UserScenario(instruction="x", persona="Nora Wilson, a nurse."))
    assert customer_first_name(persona) == "Nora"
    vague = Task(id="v", domain="retail", scenario=UserScenario(instruction="You are Calm and polite."))
    assert customer_first_name(vague) is None


def test_invented_details_are_identifiers_the_customer_was_never_given():
    from apigen_envs.simulators.customer_lines import invented_details

    # TASK knows wei@example.com and order #W1 (too short to be an order id pattern).
    assert invented_details("My email is wei@example.com.", TASK) == []
    assert invented_details("My email is wei.ivanov@gmail.com and my zip is 90210.", TASK) == [
        "wei.ivanov@gmail.com",
        "90210",
    ]
    # Heard in the conversation (the agent said it) counts as known; case and '#' do not matter.
    assert invented_details("Yes, order #W1234567.", TASK, ["Is it order w1234567?"]) == []
    assert invented_details("It's reservation 8QLYJZ, user wei_ivanov_42.", TASK) == ["8QLYJZ", "wei_ivanov_42"]
    # Prices, years, plain words in capitals are not identifiers.
    assert invented_details("It cost $12345.00 in 2024, PLEASE refund it.", TASK) == []


def test_a_customer_line_that_invents_a_detail_is_regenerated_then_replaced_by_the_known_info():
    asked = ASKED
    made_up = "My email address is wei.ivanov@gmail.com, I think."
    llm = ScriptedLLM([made_up, "Sure, it's wei@example.com."])
    turn = LLMUser(llm).respond(TASK, asked)
    assert turn.content == "Sure, it's wei@example.com."
    assert turn.meta["rejected"] == [{"line": made_up, "why": "invents_detail"}]
    # The regeneration names the made-up value.
    assert "wei.ivanov@gmail.com" in llm.requests[1].messages[-1]["content"]
    turn = LLMUser(ScriptedLLM(["It's 4630@me.com."], cycle=True)).respond(TASK, asked)
    assert turn.content == "My name is Wei Ivanov and my email is wei@example.com."
    # An opening that makes up an order id is not kept either.
    llm = ScriptedLLM(["I want to cancel order #W7654321.", "I want to cancel order #W1, I no longer need it."])
    turn = LLMUser(llm).respond(TASK, [])
    assert turn.content == "I want to cancel order #W1, I no longer need it."
    assert turn.meta["rejected"][0]["why"] == "invents_detail"


def test_telling_the_customer_their_own_details_is_agent_speak():
    assert role_confusion("Your email is jane@example.com.") == "agent_speak"
    assert role_confusion("My email is jane@example.com.") is None


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        # Said lines of the 40-episode measure that the earlier rules let through.
        (
            "I'm sorry, but I don't have your email address. Please provide me with that information.",
            "asks_customer_details",
        ),
        ("I'm sorry, I do not have your email address. Could you please provide it?", "asks_customer_details"),
        (
            "Thank you for providing my identity. Could I please have your name and email address?",
            "asks_customer_details",
        ),
        ("I don't know your email address.", "apologises_lacking_info"),
        ("Your name is Nora Martin.", "agent_speak"),
        ("I'm sorry, but I don't know Wei Ivanov's email address.", "agent_speak"),
        # The customer's own voice stays fine.
        ("Sorry, I don't have my email at hand; my zip is 12345.", None),
        ("Could you provide the tracking number, please?", None),
    ],
)
def test_more_lines_from_the_agents_side(line, kind):
    assert role_confusion(line, name="Wei") == kind


def test_a_made_up_own_name_is_an_invented_detail():
    from apigen_envs.simulators.customer_lines import invented_details

    assert invented_details("My name is John Doe.", TASK) == ["John Doe"]
    assert invented_details("My name is Wei Ivanov, email wei@example.com.", TASK) == []


def test_stopping_at_the_identity_question_is_regenerated():
    asked = ASKED
    llm = ScriptedLLM(["###STOP###", "I'm Wei Ivanov, wei@example.com."])
    turn = LLMUser(llm).respond(TASK, asked)
    assert turn.stop is None and turn.content == "I'm Wei Ivanov, wei@example.com."
    assert turn.meta["rejected"] == [{"line": "", "why": "stops_at_identity_question"}]
    # After the agent has acted, stopping is the customer's call.
    acted = [*asked, AssistantMessage(tool_calls=(ToolCall(id="1", name="find_user_id_by_email", arguments={}),))]
    acted += [ToolMessage(tool_call_id="1", name="find_user_id_by_email", content="wei_1"), asked[1]]
    assert LLMUser(ScriptedLLM(["Thanks, bye. ###STOP###"])).respond(TASK, acted).stop == "stop"


def test_a_reply_to_the_identity_question_must_identify():
    asked = ASKED
    for dodge in ("I want to cancel order #W1.", "I'm sorry, but I cannot provide my details as requested."):
        turn = LLMUser(ScriptedLLM([dodge, "It's Wei, wei@example.com."])).respond(TASK, asked)
        assert turn.content == "It's Wei, wei@example.com." and turn.meta["rejected"][0]["why"] == "no_identity_given"
    # Saying a detail is unknown is an answer.
    assert (
        LLMUser(ScriptedLLM(["I forgot my email, sorry."])).respond(TASK, asked).content == "I forgot my email, sorry."
    )
