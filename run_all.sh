#!/usr/bin/env bash
# The main job: every notebook, headless through papermill, in order; stops at the first failure.
#   ./run_all.sh                          synthetic demo set (made in $OUT/data on the first run), CPU-sized budget
#   DATA_DIR=/path/to/data ./run_all.sh   the contest data (train/, test/), notebook defaults (128 px, 12 epochs)
#   QUICK=1 ./run_all.sh                  tiny budget, every code path (what the tests run)
#   OUT_DIR=somewhere ./run_all.sh        outputs elsewhere (default runs/, ignored by git)
#   PYTHON=/path/to/python ./run_all.sh  that interpreter (default: see setup_env.sh)
set -euo pipefail
cd "$(dirname "$0")"
source ./setup_env.sh   # sets PY: an active virtual environment, else a project-local .venv
QUICK=${QUICK:-0}
quick=False; [ "$QUICK" = "1" ] && quick=True
OUT=${OUT_DIR:-runs}/$([ "$QUICK" = "1" ] && echo quick || echo demo)
[ -n "${DATA_DIR:-}" ] && OUT=${OUT_DIR:-runs}/$([ "$QUICK" = "1" ] && echo quick || echo full)
DATA=${DATA_DIR:-$OUT/data}
NB_OUT=$OUT/notebooks
# Given data must be there: a misspelt DATA_DIR is an error, never a reason to make demo data.
if [ -n "${DATA_DIR:-}" ]; then
  for f in train/landmarks.csv train/images test/test_points.csv test/images; do
    if [ ! -e "$DATA_DIR/$f" ]; then
      echo "error: DATA_DIR=$DATA_DIR: $f not found (the contest layout is train/landmarks.csv, train/images/," \
           "test/test_points.csv, test/images/; without DATA_DIR, ./run_all.sh runs on the synthetic demo set)" >&2
      exit 2
    fi
  done
fi
if ! mkdir -p "$NB_OUT" 2>/dev/null; then
  echo "error: OUT_DIR=${OUT_DIR:-runs}: cannot make $NB_OUT there (a file in the way, or no permission to write)" >&2
  exit 2
fi
# The demo set, asked for by name, and its budget on 2 CPU cores; real data keeps the notebooks' defaults.
DEMO=()
MAKE_DEMO=False
[ -z "${DATA_DIR:-}" ] && DEMO=(-p arch resnet18 -p epochs 5 -p crop_size 64 -p batch_size 32) && MAKE_DEMO=True

# The .ipynb files run below hold their .py files' cells. Checked, never written: the main job leaves the
# clone as it found it (a jupytext of another version rewrites what it syncs, and a dirty clone cannot pull).
# Then the notebooks to run, in order (notebook.NOTEBOOKS).
NOTEBOOK_NAMES=$("$PY" -m landmarklib.cells --check --list) || exit 2

run() {  # run NOTEBOOK [papermill args...]
  local nb=$1; shift
  local start=$SECONDS
  echo "== notebooks/$nb.ipynb -> $NB_OUT/$nb.ipynb"
  if ! "$PY" -m papermill "notebooks/$nb.ipynb" "$NB_OUT/$nb.ipynb" -k python3 --log-output --no-progress-bar \
        -p data_dir "$DATA" -p quick "$quick" "$@" 2>"$NB_OUT/$nb.log"; then
    local cell
    cell=$(grep -o 'Exception encountered at "In \[[0-9]*\]"' "$NB_OUT/$nb.log" | head -1 || true)
    local why   # the exception's own line (DataError: file:line: what), without the traceback around it
    why=$(grep -E '^[A-Za-z_.]*(Error|Exception|Interrupt)[A-Za-z]*: ' "$NB_OUT/$nb.log" | grep -v PapermillExecutionError | tail -n 1 || true)
    [ -n "$why" ] || why=$(tail -n 5 "$NB_OUT/$nb.log")
    echo "error: $why" >&2
    echo "FAILED: notebooks/$nb.ipynb${cell:+, ${cell#Exception encountered at }}; executed notebook: $NB_OUT/$nb.ipynb, log: $NB_OUT/$nb.log" >&2
    case "$why" in DataError:*|ValueError:*) exit 2 ;; *) exit 1 ;; esac   # 2: bad input, as the CLIs
  fi
  grep -v '^\(Executing\|Input Notebook\|Output Notebook\|Working directory\|Black is not\)' "$NB_OUT/$nb.log" \
    | sed -n '/Executing Cell/!p' | tail -n 4 || true
  echo "   done in $((SECONDS - start)) s"
}

for nb in $NOTEBOOK_NAMES; do
  case $nb in   # each notebook's own parameters in the main job; data_dir and quick go to every one
    data)                ARGS=(-p out_dir "$OUT" -p demo "$MAKE_DEMO") ;;
    eda_bad_annotations) ARGS=(-p out_dir "$OUT" -p out "$OUT/bad_annotations.csv") ;;
    train)               ARGS=(-p run_dir "$OUT/train" "${DEMO[@]}") ;;
    lr_drop_ablation)    ARGS=(-p grid_dir "$OUT/ablation" -p blocklist "$OUT/bad_annotations.csv" "${DEMO[@]}") ;;
    submission)          ARGS=(-p run_dirs "$OUT/train" -p out "$OUT/submission.csv") ;;
    *)                   ARGS=() ;;
  esac
  run "$nb" "${ARGS[@]}"
done
echo "== all notebooks ran in $SECONDS s; outputs in $OUT (executed notebooks in $NB_OUT)"
