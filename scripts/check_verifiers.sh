#!/usr/bin/env bash
# Check the verifiers adapter against the real `verifiers` package, in a side venv.
#
# verifiers 0.4.x pins openai<3 while this project's own venv uses openai 3.x, so the check runs in a
# separate virtualenv (default /tmp/vf-venv, override with VF_VENV) where verifiers brings its openai 2.x
# and this project is installed without dependencies on top of it. scripts/test.sh runs it before the suite.
#
# Usage: scripts/check_verifiers.sh [extra pytest args]
# Env:   VF_VENV (venv path), VF_VERSION (default 0.4.0), PYTHON (interpreter for the venv, default python3)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VF_VENV:-/tmp/vf-venv}"
version="${VF_VERSION:-0.4.0}"
python="${PYTHON:-python3}"

case "$venv" in
  "$repo"|"$repo"/*) echo "VF_VENV must live outside the repository ($repo)" >&2; exit 2 ;;
esac

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('verifiers') != '$version')" 2>/dev/null; then
  "${pip[@]}" install "verifiers==$version"
fi
# Our runtime dependencies except openai, whose version verifiers chose; then the project itself, no deps.
"${pip[@]}" install "gymnasium>=1.0" "pydantic>=2.6" "numpy>=1.26" "tqdm>=4.66" "pytest>=8"
"${pip[@]}" install --no-deps -e "$repo"
"$venv/bin/python" -m pip check
"$venv/bin/python" - <<'PY'
import importlib.metadata as m

print("verifiers", m.version("verifiers"), "| openai", m.version("openai"))
PY

cd "$repo"
"$venv/bin/python" -m pytest tests/test_adapters_verifiers.py -p no:cacheprovider -o addopts="" -W ignore::pytest.PytestConfigWarning -q "$@"
