"""Error types shared by the whole suite.

Two families matter to users:

* :class:`ToolError` is a *business* failure raised by a tool ("order is not pending"). The agent sees
  its message as the tool result; it is part of normal episodes.
* Everything deriving from :class:`ApigenError` is a usage or infrastructure failure (bad action type,
  unknown domain, corrupt data file, dead LLM server). These are raised to the caller with a clear
  message, or recorded on the episode, and never shown to the agent as if they were tool output.

Of those, :class:`InfrastructureError` marks the failures that say nothing about the policy (the model
server or the env server gave up). The episode runner records them as infrastructure terminations, left out
of metrics and retried by the collector; any other exception a policy raises counts against the policy.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ApigenError(Exception):
    """Base class of every error raised by apigen-envs itself."""


class InfrastructureError(ApigenError):
    """A server the episode depends on failed for good (after retries): the model server, the env server.

    Raise it (or a subclass) from an agent when the failure is not the policy's doing, e.g. a wrapper around
    a model API that gave up; the runner then records ``agent_error`` instead of ``invalid_action``.
    """


class ToolError(Exception):
    """A tool refused the request for a business reason; the message is shown to the agent."""


class ToolCallError(ApigenError):
    """The agent's tool call could not be executed (unknown tool, bad JSON, invalid arguments).

    The env turns this into an error observation for the agent instead of raising it.
    """


class UnknownToolError(ToolCallError):
    """A call to a tool that does not exist; its message is the whole observation (peers word it freely)."""


class InvalidActionError(ApigenError, TypeError):
    """`step` received something that is neither an assistant message nor a tool call."""


class EnvStateError(ApigenError, RuntimeError):
    """The env was used out of order: `step` before `reset`, or after the episode ended."""


class DomainNotFoundError(ApigenError, KeyError):
    """No domain (or task) with the requested name is registered."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown name"


class DataFileError(ApigenError, ValueError):
    """A data file (DB, tasks, episodes) is missing, truncated or invalid; the message names it."""


class EnvBugError(ApigenError, RuntimeError):
    """A tool raised an unexpected exception: a defect in the domain, not in the agent's call."""


class LLMError(InfrastructureError, RuntimeError):
    """An LLM call failed after retries (server down, timeouts, malformed replies)."""


class EpisodeWriteError(ApigenError, OSError):
    """One episode could not be written (unserialisable record, disk full); the file is left as it was."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return a ``" Did you mean 'x'?"`` hint for the closest choice, or an empty string.

    Args:
        name: The name that was not found.
        choices: The valid names.

    Returns:
        A hint sentence starting with a space, or ``""`` when nothing is close.

    """
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""
