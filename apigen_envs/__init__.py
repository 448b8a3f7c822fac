"""apigen-envs: verifiable multi-turn tool-use environments and the APIGen-MT data pipeline.

Importing the package registers the Gymnasium ids ``apigen/Mock-v0``, ``apigen/Retail-v0`` and
``apigen/Airline-v0``.
"""

from __future__ import annotations

from apigen_envs._version import __version__
from apigen_envs.db import DBView, Snapshot
from apigen_envs.domain import Domain
from apigen_envs.env import make
from apigen_envs.episode import Episode
from apigen_envs.errors import ToolError
from apigen_envs.messages import AssistantMessage, ToolCall, ToolMessage, UserMessage
from apigen_envs.protocols import Agent, AgentContext, UserSimulator, UserTurn
from apigen_envs.registry import list_domains, load_domain, register_envs
from apigen_envs.semantics import Semantics
from apigen_envs.task import Action, Task, UserScenario
from apigen_envs.tools import ToolSet

register_envs()

__all__ = [
    "Action",
    "Agent",
    "AgentContext",
    "AssistantMessage",
    "DBView",
    "Domain",
    "Episode",
    "Snapshot",
    "Task",
    "Semantics",
    "ToolCall",
    "ToolError",
    "ToolMessage",
    "ToolSet",
    "UserMessage",
    "UserScenario",
    "UserSimulator",
    "UserTurn",
    "__version__",
    "list_domains",
    "load_domain",
    "make",
    "register_envs",
]
