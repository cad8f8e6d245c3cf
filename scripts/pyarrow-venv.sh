#!/usr/bin/env bash
# Make (or reuse) a Python venv with pyarrow, for tests that read exported files back.
# Prints the venv's python on success; exits non-zero when python3 or PyPI is unavailable.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${SCCR_PYARROW_VENV:-target/pyarrow-venv}"
python="$venv/bin/python"
if [ -x "$python" ] && "$python" -c 'import pyarrow' >/dev/null 2>&1; then
    echo "$(cd "$venv" && pwd)/bin/python"
    exit 0
fi
command -v python3 >/dev/null || { echo "python3 not found" >&2; exit 1; }
python3 -m venv "$venv" >&2
"$venv/bin/pip" install -q --disable-pip-version-check 'pyarrow==22.0.0' >&2
"$python" -c 'import pyarrow' >&2
echo "$(cd "$venv" && pwd)/bin/python"
