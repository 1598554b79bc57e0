# Sourced by run_all.sh and run_tests.sh: picks the Python to use and installs what it lacks.
#   - PYTHON=/path/to/python: that interpreter, as it is: nothing is installed into it, and what it
#     lacks is an error naming it (the tests pass their own).
#   - inside a virtual environment or conda env: its python3, as it is.
#   - in Colab (COLAB_RELEASE_TAG set): its python3, whose torch is a CUDA build and whose kernel
#     packages google-colab pins exactly: only what it lacks is installed, with every installed
#     package held at its version, and landmarklib itself with --no-deps (landmarklib/colab.py).
#   - otherwise (a system or pyenv Python; Debian and Ubuntu's are "externally managed", PEP 668,
#     and pip refuses to install into them): a project-local .venv, made on first use. It sees the
#     interpreter's own packages (--system-site-packages), so a torch already there is not
#     installed a second time.
# Then requirements.txt is installed into it once (in Colab: what it lacks), and again whenever
# requirements.txt changes.
# Sets PY to the interpreter to run.

_landmarklib_env() {
  local base=${LANDMARKLIB_BASE_PYTHON:-python3}
  if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
  elif [ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}${COLAB_RELEASE_TAG:-}" ] \
       || "$base" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' 2>/dev/null; then
    PY=$(command -v "$base")
  else
    if [ ! -x .venv/bin/python ]; then
      if ! "$base" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
        echo "error: $base is missing or older than Python 3.11; install Python 3.11+ (or set PYTHON=...)" >&2
        return 1
      fi
      if ! "$base" -c 'import ensurepip, venv' 2>/dev/null; then
        local v
        v=$("$base" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
        echo "error: $base cannot make a virtual environment: install Debian/Ubuntu's python$v-venv (sudo apt-get install python$v-venv)" >&2
        return 1
      fi
      echo "== making a virtual environment in .venv (once)"
      "$base" -m venv --system-site-packages .venv || return 1
    fi
    PY=$PWD/.venv/bin/python
  fi
  if [ -n "${PYTHON:-}" ]; then   # as it is: nothing installed into it; say what it lacks, if anything
    local missing
    missing=$("$PY" -c 'import importlib.util as u, sys; print(" ".join(m for m in sys.argv[1:] if u.find_spec(m) is None))' \
              torch torchvision numpy pandas matplotlib PIL tqdm jupytext papermill ipykernel nbformat 2>/dev/null) \
      || { echo "error: PYTHON=$PYTHON: not a Python interpreter that runs" >&2; return 2; }
    if [ -n "$missing" ]; then
      echo "error: PYTHON=$PYTHON lacks $missing; install them into it ($PYTHON -m pip install -r requirements.txt)," \
           "or unset PYTHON to use a project-local .venv" >&2
      return 2
    fi
    return 0
  fi
  # Install when requirements.txt changed since the last install into this interpreter (stamp in its prefix).
  local stamp want install=("$PY" -m pip install -q -r requirements.txt)
  if [ -n "${COLAB_RELEASE_TAG:-}" ]; then
    install=("$PY" -m landmarklib.colab install)
  fi
  stamp=$("$PY" -c 'import sys; print(sys.prefix)')/.landmarklib-requirements
  want=$(cat requirements.txt pyproject.toml | cksum)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "== installing requirements into $("$PY" -c 'import sys; print(sys.prefix)') (${install[*]:1})"
    "${install[@]}" || return 1
    echo "$want" >"$stamp" 2>/dev/null || true
  fi
}
_landmarklib_env || exit $?
