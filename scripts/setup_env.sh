#!/usr/bin/env bash
# Create or refresh the project's virtual environment in .venv (Python 3.12).
# Idempotent: it reinstalls only when pyproject.toml or requirements/constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
STAMP="$VENV/.embodied_steer_stamp"

find_python312() {
    local candidates=()
    [ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
    candidates+=(python3.12)
    if command -v pyenv >/dev/null 2>&1; then
        local root; root=$(pyenv root)
        for d in "$root"/versions/3.12*; do [ -x "$d/bin/python3" ] && candidates+=("$d/bin/python3"); done
    fi
    for d in "$HOME"/.pyenv/versions/3.12*; do [ -x "$d/bin/python3" ] && candidates+=("$d/bin/python3"); done
    candidates+=(python3 /usr/bin/python3.12 /usr/local/bin/python3.12)
    for c in "${candidates[@]}"; do
        if "$c" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 12) else 1)' >/dev/null 2>&1; then
            command -v "$c" 2>/dev/null || echo "$c"
            return 0
        fi
    done
    return 1
}

want=$(cat pyproject.toml requirements/constraints.txt | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    if ! PY=$(find_python312); then
        echo "error: embodied_steer needs Python 3.12 (LeRobot 0.6 requires >= 3.12; the pinned set is tested on 3.12)." >&2
        echo "       None was found (tried \$PYTHON, python3.12, pyenv versions 3.12.*, python3)." >&2
        echo "       Install one (e.g. 'pyenv install 3.12') or set PYTHON=/path/to/python3.12." >&2
        exit 1
    fi
    echo "[setup] creating $VENV with $PY"
    "$PY" -m venv "$VENV"
fi

echo "[setup] installing pinned dependencies into $VENV (first time: a few minutes, ~7 GB)"
# This machine's pip configuration names local index folders that do not exist for every package;
# pip warns about each one. Keep those lines out of the log, keep everything else.
quiet_pip() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
quiet_pip install --quiet --upgrade "pip>=24"
quiet_pip install --quiet -c requirements/constraints.txt -e ".[ros,dev]"
echo "$want" > "$STAMP"
echo "[setup] environment ready: $VENV"
