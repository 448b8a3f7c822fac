#!/usr/bin/env bash
# Set up a fresh machine and run the main job: a real rollout on the embedded retail tasks, printing pass^k
# and where the report is. Uses $OPENAI_API_KEY / --base-url when given, else a local model on 127.0.0.1.
# Extra arguments go to `apigen-envs run`.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[local,report]"
apigen-envs run --domain retail --split test --num-tasks 3 --trials 2 --max-turns 10 --concurrency 1 "$@"
