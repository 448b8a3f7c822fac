#!/usr/bin/env bash
# One-off setup of the offline local model (README, "The local model"; apigen_envs/local_model.py): builds the pinned llama-cpp-python
# server (about 4-5 minutes on 2 idle cores; pip caches the wheel afterwards) while the weights download.
# Usage: scripts/setup_local_model.sh [1.5b|0.5b]     (PYTHON=... picks the interpreter)
set -euo pipefail
PY="${PYTHON:-python}"
VARIANT="${1:-1.5b}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}"
# Text-only serving never loads the multimodal (llava/mtmd) library, so it is not built.
export CMAKE_ARGS="-DLLAVA_BUILD=OFF ${CMAKE_ARGS:-}"

"$PY" -m apigen_envs.local_model --ensure-only --variant "$VARIANT" &
download=$!
"$PY" -m pip install "llama-cpp-python[server]==0.3.36"
wait "$download"
"$PY" -c "from apigen_envs.local_model import ensure_server; ensure_server(); print('server package: ok')"
echo "Serve it with: $PY -m apigen_envs.local_model --variant $VARIANT"
