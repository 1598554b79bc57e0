#!/usr/bin/env bash
# The tests (CPU only): what .ci/run runs. Uses the Python that setup_env.sh picks (an active
# virtual environment, else a project-local .venv) and installs what it lacks first.
#   ./run_tests.sh                 the whole suite
#   ./run_tests.sh tests/test_x.py -k name     any pytest arguments
# pytest exits 5 when it collects no test; that fails here like any other non-zero exit.
set -euo pipefail
cd "$(dirname "$0")"
source ./setup_env.sh
exec "$PY" -m pytest -q "$@"
