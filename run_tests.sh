#!/usr/bin/env bash
# The tests (CPU only): what .ci/run runs. Uses the Python that setup_env.sh picks (an active
# virtual environment, else a project-local .venv) and installs what it lacks first.
#   ./run_tests.sh                 the whole suite, in 2 processes (pytest-xdist; a file's tests share one, and tests/e2e/ one)
#   ./run_tests.sh -m "not slow"   the quick loop: no end-to-end run (tests/e2e/), no test over about 5 s
#   ./run_tests.sh tests/test_x.py -k name -n 0     any pytest arguments (-n 0: in this process)
# pytest exits 5 when it collects no test; that fails here like any other non-zero exit.
set -euo pipefail
cd "$(dirname "$0")"
source ./setup_env.sh
PROCESSES=(-n 2 --dist loadfile)
if ! "$PY" -c 'import xdist' 2>/dev/null; then   # PYTHON=... without pytest-xdist: one process, said
  echo "note: $PY has no pytest-xdist; the tests run in one process" >&2
  PROCESSES=()
fi
exec "$PY" -m pytest -q "${PROCESSES[@]}" "$@"
