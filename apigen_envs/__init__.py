"""apigen-envs: verifiable multi-turn tool-use environments and the APIGen-MT data pipeline.

Importing the package registers the Gymnasium ids ``apigen/Mock-v0``, ``apigen/Retail-v0`` and
``apigen/Airline-v0``.
"""

from __future__ import annotations

__version__ = "0.2.0"

from apigen_envs.db import DBView, Snapshot  # noqa: E402
from apigen_envs.domain import Domain  # noqa: E402
from apigen_envs.episode import Episode  # noqa: E402
from apigen_envs.errors import ToolError  # noqa: E402
from apigen_envs.messages import AssistantMessage, ToolCall, ToolMessage, UserMessage  # noqa: E402
from apigen_envs.protocols import Agent, AgentContext, UserSimulator, UserTurn  # noqa: E402
from apigen_envs.registry import list_domains, load_domain, make, register_envs  # noqa: E402
from apigen_envs.semantics import Semantics  # noqa: E402
from apigen_envs.task import Action, Task, UserScenario  # noqa: E402
from apigen_envs.tools import ToolSet  # noqa: E402

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
