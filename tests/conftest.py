from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Validated tables are cached under the user's cache folder; the suite uses a folder of its own. Only the
# tables: the local model stays in the user's cache, so the live tests find it once it was fetched.
# The folder is removed when the run ends (the suite left one behind in /tmp on every run).
if "APIGEN_TABLE_CACHE_DIR" not in os.environ:
    os.environ["APIGEN_TABLE_CACHE_DIR"] = tempfile.mkdtemp(prefix="apigen-test-tables-")
    atexit.register(shutil.rmtree, os.environ["APIGEN_TABLE_CACHE_DIR"], ignore_errors=True)


def peers_dir() -> Path:
    """Where the tau2 peer data lives (../shared/peers/tau2 or $APIGEN_PEERS_DIR)."""
    return Path(os.environ.get("APIGEN_PEERS_DIR", REPO.parent / "shared" / "peers" / "tau2"))


@pytest.fixture
def mock_domain():
    from apigen_envs import load_domain

    return load_domain("mock")


@pytest.fixture
def mock_env(mock_domain):
    from apigen_envs.env import ToolUseEnv

    return ToolUseEnv(mock_domain)
