"""Domain loading and Gymnasium registration.

Gymnasium ids point at ``apigen_envs.env:ToolUseEnv`` by name, so this module never imports the env
(which imports this one); :func:`apigen_envs.env.make` builds envs by id or domain name. Built-in domains
are named here; a third-party domain is any ``"package.module:loader"`` path whose
loader takes ``data_dir`` and returns a :class:`~apigen_envs.domain.Domain`. Domains are loaded once per
process and data directory, so every env shares one snapshot.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import gymnasium as gym

from apigen_envs.errors import DomainNotFoundError, did_you_mean

BUILTIN_DOMAINS: MappingProxyType[str, str] = MappingProxyType(
    {
        "mock": "apigen_envs.domains.mock:load",
        "retail": "apigen_envs.domains.retail:load",
        "airline": "apigen_envs.domains.airline:load",
    }
)
"""Built-in domain name -> loader path."""

GYM_IDS: MappingProxyType[str, str] = MappingProxyType(
    {"apigen/Mock-v0": "mock", "apigen/Retail-v0": "retail", "apigen/Airline-v0": "airline"}
)
"""Registered Gymnasium id -> domain name."""

DATA_DIR_ENV = "APIGEN_DATA_DIR"


def _available(name: str) -> bool:
    module = BUILTIN_DOMAINS[name].split(":")[0]
    return importlib.util.find_spec(module) is not None


def list_domains() -> list[str]:
    """Names of the built-in domains installed in this version."""
    return [name for name in BUILTIN_DOMAINS if _available(name)]


def resolve_loader(name: str) -> Callable[..., Any]:
    """The loader function for a domain name or ``module:function`` path.

    Raises:
        DomainNotFoundError: With a did-you-mean hint.

    """
    path = BUILTIN_DOMAINS.get(name, name if ":" in name else None)
    if path is None or (name in BUILTIN_DOMAINS and not _available(name)):
        raise DomainNotFoundError(
            f"unknown domain {name!r}; available: {list_domains()}.{did_you_mean(name, list_domains())}"
        )
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise DomainNotFoundError(f"cannot import domain loader {path!r}: {exc}") from None


def resolve_data_dir(domain: str, data_dir: str | Path | None) -> Path | None:
    """Where to load a domain's data from: the argument, else ``$APIGEN_DATA_DIR``, else embedded data.

    A directory holding a sub-directory named after the domain (such as tau2's ``data/``) is accepted.
    """
    raw = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    if not raw:
        return None
    path = Path(raw).expanduser()
    sub = path / domain.split(":")[0].rsplit(".", 1)[-1]
    return sub if sub.is_dir() else path


@lru_cache(maxsize=32)
def _load_cached(name: str, data_dir: str | None, semantics: str | None) -> Any:
    loader = resolve_loader(name)
    path = Path(data_dir) if data_dir else None
    if semantics is None:
        return loader(path)
    if "semantics" not in inspect.signature(loader).parameters:
        raise ValueError(f"the loader of domain {name!r} does not take a semantics profile")
    return loader(path, semantics=semantics)


def load_domain(name: str, data_dir: str | Path | None = None, semantics: Any = None) -> Any:
    """Load a domain once per process, data directory and semantics profile (later calls share it).

    Args:
        name: ``"retail"``, ``"airline"``, ``"mock"``, or ``"package.module:loader"``.
        data_dir: Data directory (tau2 or tau-bench layout); defaults to ``$APIGEN_DATA_DIR`` or the
            embedded data.
        semantics: A :class:`~apigen_envs.semantics.Semantics`, a profile name or label
            (``"tau2+seat_accounting"``); default: the data's own (``apigen`` embedded, else the layout's
            peer).

    Returns:
        The :class:`~apigen_envs.domain.Domain`.

    """
    resolved = resolve_data_dir(name, data_dir)
    label = getattr(semantics, "label", semantics) if semantics else None
    return _load_cached(name, str(resolved.resolve()) if resolved else None, label)


def register_envs() -> None:
    """Register the Gymnasium ids (``apigen/Retail-v0`` ...). Safe to call more than once."""
    for env_id, domain in GYM_IDS.items():
        if env_id not in gym.registry and _available(domain):
            gym.register(id=env_id, entry_point="apigen_envs.env:ToolUseEnv", kwargs={"domain": domain})
