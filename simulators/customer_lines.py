"""Checks and fallbacks for simulated customer lines: the opening request and role confusion.

Small models asked to play a customer often play the agent instead ("I'm sorry, but I don't have enough
information to cancel your order.", "Could you provide your order id?") and then echo the agent for the
rest of the episode. This module holds the plain-text pieces the LLM customer uses against that:

* :func:`request_text` and :func:`template_opening`: the customer's request in the first person, from the
  scenario's structured fields (or the instruction when they are absent), used when the model's opening
  does not name the request.
* :func:`names_request`: whether a line names the request (shares a request keyword with it).
* :func:`role_confusion`: the classifier of lines a customer would not say (see its docstring for the
  exact rules; the same rules are what ``scripts/measure_customer.py`` counts as agent-speak).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from apigen_envs.task import Task

Confusion = Literal["agent_speak", "meta_commentary", "asks_customer_details", "apologises_lacking_info", "echo"]
"""Why a customer line was classified as role confusion."""

# Phrases only the agent's side says: offering help, acting on the account, verifying the caller.
_AGENT_SPEAK = re.compile(
    r"\bhow (?:can|may|could) i (?:help|assist)\b|\bwhat can i do for you\b|\bis there anything else i can\b"
    r"|\b(?:i'?d|i would|i'?ll|i will|i am|i'?m) (?:be )?(?:happy|glad|excited|delighted) to (?:help|assist)\b"
    r"|\bi can (?:help|assist) you\b|\bthank you for (?:contacting|reaching out|your patience|choosing)\b"
    r"|\blet me (?:check|look|pull|verify|find|see if i can)\b(?! (?:up |into |at |in |on )?my\b)"
    r"|\bi have (?:cancelled|canceled|updated|processed|"
    r"modified|changed|exchanged|returned|booked|issued)\b|\b(?:your|the) (?:order|reservation|request|refund|"
    r"exchange|return) has been (?:cancelled|canceled|updated|processed|modified|placed|changed|booked)\b"
    r"|\bto (?:verify|authenticate|confirm) your identity\b|\bas an ai\b|\bi am an ai\b|\bhello,? (?:dear )?customer\b"
    r"|\bdear customer\b|\bwelcome to\b|\b(?:i'?m|i am|so) sorry to hear\b|\bi understand (?:your|how)\b"
    r"|\byour (?:e-?mail|email address|zip(?: code)?|user id|full name|name) is\b",
    re.IGNORECASE,
)

# The model talking about the message instead of saying it ("Sure, here's the first message: ...").
_META = re.compile(
    r"\bhere(?:'s| is) (?:the |my |a |your )?(?:first |opening |next )?(?:customer'?s? )?(?:message|reply|response)\b"
    r"|\b(?:first|opening) message to the agent\b|\bas (?:the|a) customer,? i\b",
    re.IGNORECASE,
)

# The customer asking the agent for details only the customer has.
_ASKS_DETAILS = re.compile(
    r"\b(?:could|can|would|will) you (?:please )?(?:provide|give|share|tell|send|confirm)(?: me)? (?:with )?"
    r"(?:your|the customer'?s?)\b"
    r"|\bwhat(?:'s| is| are) your (?:name|full name|email|e-mail|zip|zip code|user id|order|order id|order number|"
    r"reservation|reservation id|address|payment|account|date of birth)\b"
    r"|\b(?:please )?(?:provide|give|share|tell) me (?:with )?your\b"
    r"|\bi (?:will )?need your\b(?! (?:help|assistance|support))"
    r"|\b(?:may|could|can) i (?:please )?(?:have|get|ask for|know) your\b"
    r"|\bplease (?:provide|share|confirm|give) your\b"
    r"|\bprovide (?:me )?(?:with )?(?:your|his|her|their) (?:name|full name|e-?mail|email address|zip|user id|"
    r"details|information)\b"
    r"|\b(?:please|could you|can you|if you could) (?:please )?provide (?:it|that|them|this|me with (?:that|this|the) "
    r"(?:information|details))\b",
    re.IGNORECASE,
)

# Apologising for lacking information or access: the model's own voice, not the customer's.
_APOLOGISES = re.compile(
    r"\b(?:sorry|apologi[sz]e)\b[^.?!]{0,60}\b(?:don'?t|do not|cannot|can'?t)\s+(?:have|access)\s+(?:enough|sufficient|"
    r"access|any information|the information|information|the details|details about|the ability)\b"
    r"|\b(?:enough|sufficient|the necessary) (?:information|details|context) to\b"
    r"|\bi (?:don'?t|do not) have access\b|\bi(?:'m| am) (?:unable|not able) to (?:assist|help|access)\b"
    r"|\bi (?:cannot|can'?t) (?:assist|help) (?:you|with)\b"
    r"|\b(?:don'?t|do not) (?:have|know) (?:your|his|her|their)\b",
    re.IGNORECASE,
)

_WORD_RE = re.compile(r"[a-z0-9]+")

# Words that name what a customer wants done (stems, matched at word starts). A line names the request
# when it shares one of the request's stems; an id alone ("#W123") does not say what is wanted.
_REQUEST_STEMS = (
    "cancel",
    "return",
    "refund",
    "exchang",
    "swap",
    "replac",
    "switch",
    "modif",
    "chang",
    "updat",
    "address",
    "pay",
    "paid",
    "paypal",
    "card",
    "gift",
    "book",
    "flight",
    "reservation",
    "seat",
    "cabin",
    "upgrad",
    "bag",
    "luggage",
    "compensat",
    "certificate",
    "passenger",
    "insurance",
    "status",
    "track",
    "deliver",
    "ship",
    "order",
    "item",
    "price",
    "cost",
    "money",
    "amount",
    "total",
    "human",
    "transfer",
    "help",
)
_GENERIC_STEMS = frozenset({"order", "item", "help"})  # too common to name a request on their own


# Stems that name the same wish: "swap" and "exchange" ask for one thing, "paid" and "pay" too.
_SYNONYMS = (
    frozenset({"exchang", "swap", "replac", "switch"}),
    frozenset({"return", "refund"}),
    frozenset({"money", "amount", "total", "cost", "price", "paid", "pay"}),
    frozenset({"modif", "chang", "updat"}),
    frozenset({"bag", "luggage"}),
    frozenset({"track", "deliver", "ship", "status"}),
    frozenset({"compensat", "certificate"}),
)


def _stems(text: str) -> set[str]:
    words = _WORD_RE.findall(text.lower())
    found = {stem for stem in _REQUEST_STEMS for w in words if w.startswith(stem)}
    for group in _SYNONYMS:
        if found & group:
            found |= group
    return found


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]


_SECTION_RE = re.compile(r"^\s*reason for call\s*:\s*\n?(.*?)(?:\n\s*\n|\Z)", re.IGNORECASE | re.DOTALL | re.MULTILINE)
_WANT_RE = re.compile(r"\b(?:want|would like|need|wish|ask|hope|are (?:thinking|trying|looking)|plan)\b", re.I)


def request_text(task: Task) -> str:
    """What the customer wants, in the scenario's words (second person, as instructions are written).

    The structured ``reason_for_call`` when present; else the instruction's "Reason for call:" section;
    else the instruction's sentences that say what "you want".

    Args:
        task: The task.

    Returns:
        The request text (possibly empty for an instruction that states no wish).

    """
    scenario = task.scenario
    if scenario.reason_for_call and scenario.reason_for_call.strip():
        return " ".join(scenario.reason_for_call.split())
    match = _SECTION_RE.search(scenario.instruction)
    if match and match.group(1).strip():
        return " ".join(match.group(1).split())
    sentences = _sentences(scenario.instruction)
    wanted = [s for s in sentences if _WANT_RE.search(s)]
    if not wanted:
        # "You are Ana (...). Move $50 from acc_1 to acc_2.": the sentences after who the customer is.
        wanted = [s for s in sentences if not re.match(r"(?:you are|your name|persona)\b", s, re.IGNORECASE)]
    return " ".join(wanted[:2])


_PRONOUN_RULES = (
    (r"\byou are\b", "I am"),
    (r"\byou were\b", "I was"),
    (r"\byou'?re\b", "I'm"),
    (r"\byou'?ve\b", "I've"),
    (r"\byou'?d\b", "I'd"),
    (r"\byou'?ll\b", "I'll"),
    (r"\byourself\b", "myself"),
    (r"\byours\b", "mine"),
    (r"\byour\b", "my"),
    # "you" after a preposition or a verb taking an object is "me"; elsewhere it is the subject "I".
    (
        r"\b(to|for|with|from|about|give|gives|gave|send|sent|offer|offers|offered|tell|told|ask|asks|asked|"
        r"let|lets|help|helps|charge|charged|refund|refunded|cost|costs|get|know|knows|knew|call|calls|reach|"
        r"contact|email|emailed|sees|see|by|at|of) you\b",
        r"\1 me",
    ),
    (r"\byou\b", "I"),
)

# Compiled once: the scripted customer rewrites every opening line, and re.sub's pattern cache lookup cost
# as much as the substitutions themselves.
_PRONOUNS = tuple((re.compile(pattern, re.IGNORECASE), repl) for pattern, repl in _PRONOUN_RULES)
_MID_SENTENCE_MY = re.compile(r"(?<=[a-z,;:] )My\b")


def first_person(text: str) -> str:
    """Rewrite a second-person scenario sentence ("You want your order cancelled") in the first person.

    Args:
        text: Scenario text addressed to the customer.

    Returns:
        The same text as the customer would say it ("I want my order cancelled").

    """
    out = text
    for pattern, repl in _PRONOUNS:
        out = pattern.sub(lambda m, r=repl: _case_like(m, m.expand(r)), out)
    # "I" stays upper case even mid-sentence; "My" mid-sentence is lower case again.
    out = _MID_SENTENCE_MY.sub("my", out)
    return out


def _case_like(match: re.Match[str], replacement: str) -> str:
    if match.group(0)[:1].isupper() and replacement[:1].islower():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def template_opening(task: Task) -> str:
    """The plain opening line: a greeting and the request in the first person.

    Args:
        task: The task.

    Returns:
        For example ``"Hi, I want to cancel order #W1832943 because I ordered it by mistake."``.

    """
    request = first_person(request_text(task)).strip()
    if not request:
        return "Hi, I need some help with a request."
    if request[-1] not in ".!?":
        request += "."
    if not re.match(r"(?:I|I'm|I've|I'd|My|For|On|In|At|After|Since|The|A|An|This|Hi|Hello)\b", request):
        request = "I want to " + request[0].lower() + request[1:]  # an imperative ("Move $50 ...")
    return f"Hi, {request[0].lower() + request[1:] if request[:2] != 'I ' else request}"


_IDENTITY_RE = re.compile(r"^(?:you are [A-Z][a-z]+ [A-Z]|your (?:name|email|e-mail|user id|zip)\b)", re.IGNORECASE)


def identity_text(task: Task) -> str:
    """What the customer says to identify themselves, in the first person ("My name is ... and my email is ...").

    The structured ``known_info`` when present, else the instruction's sentences naming the customer
    ("You are Ana Silva (ana@example.com).").
    """
    known = task.scenario.known_info
    if known and known.strip():
        return first_person(" ".join(known.split()))
    found = [s for s in _sentences(task.scenario.instruction) if _IDENTITY_RE.match(s)]
    return first_person(" ".join(found[:2]))


def scripted_opening(task: Task) -> str:
    """The scripted customer's first message: the request, then who they are, in the first person.

    Args:
        task: The task.

    Returns:
        For example ``"Hi, I want to move $50 from my checking account. I am Ana Silva (ana@example.com)."``.

    """
    identity = identity_text(task)
    opening = template_opening(task)
    return f"{opening} {identity}" if identity and identity not in opening else opening


def names_request(line: str, task: Task) -> bool:
    """Whether a customer line names the task's request.

    The rule: the line shares at least one request keyword (a stem such as ``cancel``, ``return``,
    ``exchang``, ``address``, ``flight``, or a synonym of one: ``swap`` for ``exchang``, ``paid`` for
    ``pay``) with :func:`request_text`; the generic
    stems ``order``, ``item`` and ``help`` count only when the request has no other stem.

    Args:
        line: The customer's line.
        task: The task.

    Returns:
        True when the request is named (also True when the request has no keyword at all).

    """
    wanted = _stems(request_text(task))
    specific = wanted - _GENERIC_STEMS
    if specific:
        wanted = specific
    if not wanted:
        return True
    return bool(wanted & _stems(line))


def _tokens(text: str) -> set[str]:
    return set(_WORD_RE.findall(text.lower()))


def is_echo(line: str, agent_lines: Iterable[str]) -> bool:
    """Whether a line repeats one of the agent's lines (token-set Jaccard >= 0.8, at least 4 words)."""
    mine = _tokens(line)
    if len(mine) < 4:
        return False
    for other in agent_lines:
        theirs = _tokens(other)
        if theirs and len(mine & theirs) / len(mine | theirs) >= 0.8:
            return True
    return False


# The persona and known-info phrasings of the embedded sets: "You are Chloe Nelson", "Calling: Ava Young,",
# "Name: Aarav Okafor;", "..., named Amelia Mitchell", "called Aarav Martinez", "name Oscar Lewis", and a
# persona that starts with the name ("Nora Wilson, a graduate student"). A first and a last name are both
# required, so "You are Calm" or "Name: a pharmacist" give nothing.
_NAME_RES = (
    re.compile(
        r"\b(?i:you are|you're|my name is|your name is|i am|i'm|named|called|calling:|name:?)\s+"
        r"([A-Z][a-z]+)\s+[A-Z][a-z]+"
    ),
    re.compile(r"^\s*([A-Z][a-z]+)\s+[A-Z][a-z]+\s*[,;(]"),
)
_NOT_NAMES = frozenset({"I", "A", "The", "In", "Calm", "Polite", "You", "Your", "Role", "Calling", "Name"})


def customer_first_name(task: Task) -> str | None:
    """The customer's first name from the scenario ("You are Chloe Nelson." -> ``"Chloe"``), if stated."""
    for text in (task.scenario.persona, task.scenario.known_info, task.scenario.instruction):
        for pattern in _NAME_RES:
            match = pattern.search(text or "")
            if match and match.group(1) not in _NOT_NAMES:
                return match.group(1)
    return None


def greets_self(line: str, name: str | None) -> bool:
    """Whether the line addresses the customer by their own name: the agent's voice.

    A greeting at the start of a sentence or line ("Hi there, Chloe.", a letter's "Dear Chloe Nelson,"),
    the name as a form of address closing a clause ("I'm sorry, Chloe Nelson."), or the customer in the
    third person ("Chloe Nelson's email"). A customer introducing themselves ("I'm Chloe Nelson", "This is
    Chloe.") does not match.
    """
    if not name:
        return False
    who = rf"{re.escape(name)}(?:\s+[A-Z][a-z]+)?"
    hello = r"(?i:hi|hello|hey|dear|good (?:morning|afternoon|evening))\b(?i: there)?"
    greeting = rf"(?:^|[\n.!?]\s*)\W*{hello},?\s+{who}\b(?!\s+(?:here|speaking)\b)"
    if re.search(greeting, line) or re.search(rf"\b{who}'s\b", line):  # "Leah Harris's email": about oneself
        return True
    # After "Sure," / "Yes," the name answers the agent's question ("Sure, Chloe Nelson, chloe@x.com").
    vocatives = re.finditer(rf"([\w']+)?\s*,\s+{who}\s*(?:[.!?,]|$)", line)
    return any((m.group(1) or "").lower() not in _ANSWER_WORDS for m in vocatives)


_ANSWER_WORDS = frozenset({"sure", "yes", "yeah", "okay", "ok", "certainly", "course", "is", "am", "it's", "i'm"})


# An opening that acknowledges someone ("Sure, I'd be happy to..."): nobody has spoken yet, so it answers
# the prompt, not the agent.
_ACKNOWLEDGES = re.compile(r"^\W*(?:sure|certainly|of course|absolutely|okay|ok|understood|got it)\b", re.IGNORECASE)


# Identifiers a customer might make up: emails, order ids (#W0000000), user ids (jane_doe_1234), reservation
# codes and flight numbers (six capitals and digits, at least one digit), zip codes (five digits).
_IDENTIFIER_RE = re.compile(
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+|#?\b[A-Z]{1,2}\d{5,}\b|\b[a-z]+_[a-z]+_\d+\b"
    r"|\b(?=[A-Z0-9]*\d)(?=[A-Z0-9]*[A-Z])[A-Z0-9]{6}\b|(?<![\d$.,])\b\d{5}\b(?![.,]?\d)"
)

# A name the customer gives as their own ("My name is John Doe", "I'm John Doe"): checked like an id.
_SELF_NAME_RE = re.compile(r"\b(?i:my name is|i am|i'm|this is)\s+([A-Z][a-z]+)(?:\s+([A-Z][a-z]+))?")


def invented_details(line: str, task: Task, heard: Iterable[str] = ()) -> list[str]:
    """Identifiers in a customer line that neither the scenario nor the conversation contains.

    A customer that gives an email, zip code, user id, order id, reservation code or own name ("my name is
    John Doe") its situation does not state invents it (small models do: asked for an email they do not
    know, they write ``mei.kovacs@example.com``). Matching ignores case and a leading ``#``.

    Args:
        line: The customer's line.
        task: The task (every field of its scenario counts as known).
        heard: Other text the customer knows: the conversation's lines.

    Returns:
        The invented identifiers, in order; empty when there are none.

    """
    found = _IDENTIFIER_RE.findall(line) + [" ".join(filter(None, m.groups())) for m in _SELF_NAME_RE.finditer(line)]
    if not found:
        return []
    known = " ".join([task.scenario.model_dump_json(), *heard]).lower()
    return [item for item in found if item.lower().lstrip("#") not in known]


def role_confusion(
    line: str, agent_lines: Iterable[str] = (), name: str | None = None, *, opening: bool = False
) -> Confusion | None:
    """Classify a customer line that speaks from the agent's side.

    Rules (regular expressions, case-insensitive; the first that matches wins):

    * ``agent_speak``: offering help ("how can I help", "happy to assist", "is there anything else I
      can"), acting on the account ("let me check", "I have cancelled", "your order has been
      processed"), verifying the caller ("to verify your identity"), the agent's empathy ("I'm sorry to hear", "I
      understand your frustration"), speaking as an AI or a shop, or
      greeting the customer by their own ``name`` ("Hi there, Chloe.").
    * ``meta_commentary``: talking about the message instead of saying it ("here's the first message",
      "as the customer, I"), or, for an ``opening``, acknowledging someone ("Sure, ...", "Certainly.")
      before anyone has spoken.
    * ``asks_customer_details``: asking the agent for the customer's own details ("could you provide
      your", "what is your email/order id/zip", "I need your").
    * ``apologises_lacking_info``: apologising for lacking information or access ("I'm sorry, but I
      don't have enough information", "I don't have access").
    * ``echo``: the line repeats one of ``agent_lines`` (see :func:`is_echo`).

    Args:
        line: The customer's line (markers removed).
        agent_lines: The agent's recent lines, for the echo rule.
        name: The customer's first name (:func:`customer_first_name`), for the self-greeting rule.
        opening: Whether the line opens the conversation (nobody has spoken before it).

    Returns:
        The kind of confusion, or None for a line a customer could say.

    """
    if not line.strip():
        return None
    if _AGENT_SPEAK.search(line) or greets_self(line, name):
        return "agent_speak"
    if _META.search(line) or (opening and _ACKNOWLEDGES.match(line)):
        return "meta_commentary"
    if _ASKS_DETAILS.search(line):
        return "asks_customer_details"
    if _APOLOGISES.search(line):
        return "apologises_lacking_info"
    if is_echo(line, agent_lines):
        return "echo"
    return None
