"""Customer voices for template blueprints: a persona bank and phrasing pickers.

Template instructions read like many different customers only if no sentence frame is shared by most of
them, so every sentence a template writes is drawn from several phrasings, and personas are combined from
independent parts (who the customer is, their mood, how they talk) rather than picked from a short list.
Everything is drawn from the ``random.Random`` a template is given, so a seed still fixes the text.
"""

from __future__ import annotations

import random

ROLES: tuple[str, ...] = (
    "a nurse who just came off a night shift",
    "a retired schoolteacher",
    "a graduate student on a tight budget",
    "a small-business owner juggling several calls",
    "a parent with two toddlers in the background",
    "a freelance photographer",
    "a software developer on a lunch break",
    "a pharmacist",
    "a long-haul truck driver calling from a rest stop",
    "a high-school coach",
    "a real-estate agent between viewings",
    "a first-year college student",
    "a chef who is about to start a shift",
    "an accountant in the middle of tax season",
    "a retired firefighter",
    "a musician who tours a lot",
    "a veterinarian",
    "a librarian",
    "a construction site manager",
    "a yoga instructor",
    "a lawyer who bills by the minute",
    "a stay-at-home dad",
    "a dental hygienist",
    "a newly retired couple's organiser",
)
MOODS: tuple[str, ...] = (
    "Grumpy today.",
    "You sound sleepy.",
    "Upbeat, almost too upbeat.",
    "You are nervous about money.",
    "Sarcastic at times.",
    "Quiet and hesitant.",
    "You hate waiting.",
    "Kind but scatterbrained.",
    "Very matter-of-fact.",
    "You get flustered easily.",
    "Relaxed; no rush at all.",
    "You are annoyed but try to stay civil.",
    "You are patient and polite.",
    "You are short on time and a little irritable.",
    "You are cheerful and like small talk.",
    "You are anxious and want every detail repeated back to you.",
    "You are blunt and dislike long explanations.",
    "You are suspicious of companies and double-check what you are told.",
    "You are tired and speak in short sentences.",
    "You are easygoing, but firm once you have decided something.",
    "You are frustrated because this is your second call about it.",
    "You are curious and ask why the rules are what they are.",
    "You are warm and thank the agent often.",
    "You are distracted and sometimes need a question asked twice.",
)
STYLES: tuple[str, ...] = (
    "Short replies.",
    "Lots of exclamation marks!",
    "You mix in a few words of Spanish.",
    "You ramble.",
    "You repeat key numbers back.",
    "You never use contractions.",
    "Emoji-free but chatty.",
    "You prefer bullet-point answers.",
    "You type in lower case and skip punctuation.",
    "You give one piece of information at a time, only when it is asked for.",
    "You tend to over-explain the background of your problem.",
    "You use casual slang.",
    "You write formally, like a business letter.",
    "You ask the agent to confirm each step before moving on.",
    "You apologise a lot, even when nothing is your fault.",
    "You get to the point in the first message.",
    "You occasionally make a small joke.",
    "You spell things out carefully when asked.",
    "You like to summarise what was agreed at the end.",
    "You answer questions with as few words as possible.",
)


def persona(rng: random.Random, name: str) -> str:
    """A persona for the user simulator: who the customer is, their mood and how they talk.

    Args:
        rng: The template's random source.
        name: The customer's full name.

    Returns:
        Two or three sentences.

    """
    role = rng.choice(ROLES)
    lead = rng.choice(
        (
            f"You are {name}, {role}.",
            f"{name}, {role}.",
            f"Name: {name}; {role}.",
            f"You're {role} called {name}.",
            f"{name} ({role}).",
            f"Role: {role}, named {name}.",
            f"Calling: {name}, {role}.",
        )
    )
    parts = [lead, rng.choice(MOODS)]
    if rng.random() < 0.7:
        parts.append(rng.choice(STYLES))
    return " ".join(parts)


def pick(rng: random.Random, *options: str) -> str:
    """One of several phrasings of the same sentence."""
    return rng.choice(options)


def confirm_line(rng: random.Random) -> str | None:
    """How the customer answers the agent's confirmation question, phrased in one of several ways (or not
    stated at all, since an agreeing customer is the default).
    """
    return rng.choice(
        (
            None,
            None,
            None,
            "Agree once the agent reads it back.",
            "Say yes to the summary.",
            "Confirm when asked.",
            "Approve the final summary.",
            "Give the go-ahead after checking the details.",
            "You will confirm once everything matches.",
            "Okay it when prompted.",
            "Yes, once summarised.",
            "Fine to confirm.",
            "Then confirm.",
            "Consent after hearing the details.",
        )
    )


def card(rng: random.Random, brand: str, last_four: str) -> str:
    """A credit card as the customer names it, in one of several ways."""
    return rng.choice(
        (
            f"your {brand} credit card ending in {last_four}",
            f"the {brand} ending {last_four}",
            f"your {brand} (last four {last_four})",
            f"the {brand} card, {last_four}",
            f"your {brand} x{last_four}",
            f"the {brand} that ends with {last_four}",
        )
    )
