# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     gpuType: T4
#     provenance: []
#   jupytext:
#     notebook_metadata_filter: accelerator,colab,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5 · Submission: predict the test set, write and check `submission.csv`
#
# First every run you have made, best validation MSE first, with the curves of the best. Then it
# takes `best.pt` of the latest run on Drive (or of each run in `run_dirs`: several are averaged, an
# ensemble; `"best:3"`: the three best finished runs of the table), predicts every test image and its
# mirror (`tta = "flip"`), writes `submission.csv` in the contest format (`MyDrive/landmarklib/runs/` in
# Colab), checks it as the leaderboard would, and scores it where the test labels are known (the demo set).

# %%
# @title Setup { display-mode: "form" }
# @markdown In Colab this clones landmarklib into `/content` (a later session updates the clone) and
# @markdown installs what Colab lacks, never its own torch. Elsewhere it only finds the repository root.
# @markdown A fork? Put its address here, and in README.md's badges.
REPO_URL = "https://github.com/landmarklib/landmarklib"  # @param {type:"string"}
import importlib.util, os, subprocess, sys
# A fresh Colab runtime, with a person at it: clone. A headless kernel (papermill) never clones.
if "google.colab" in sys.modules and get_ipython().kernel._allow_stdin and not importlib.util.find_spec("landmarklib"):
    subprocess.run(["git", "clone", "-q", REPO_URL, "landmarklib"], check=True)
for root in ("landmarklib", ".."):   # the clone, seen from Colab's /content; the repository, seen from notebooks/
    if os.path.isfile(os.path.join(root, "landmarklib", "__init__.py")):
        sys.path.insert(0, os.path.abspath(root))
from landmarklib.colab import setup
setup()   # Colab: update the clone, install what it lacks; everywhere: work from the repository root

# %% tags=["parameters"]
# @title Parameters { display-mode: "form" }
# @markdown Each one is checked before anything runs; headless, `papermill -p NAME VALUE` sets it.
# @markdown ### Which runs
# @markdown `run_dirs` None: the latest run
run_dirs = None  # @param {type:"raw"}
checkpoint = "best.pt"  # @param ["best.pt", "last.pt"]
tta = "flip"  # @param ["none", "flip"]
device = "auto"  # @param {type:"string"}
# @markdown ### Data
# @markdown `zip_path` None: the one zip in MyDrive/landmarklib/. `demo = True`: the synthetic demo set.
zip_path = None  # @param {type:"raw"}
test_points_path = None  # @param {type:"raw"}
demo = None  # @param {type:"raw"}
data_dir = "data"  # @param {type:"string"}
# @markdown ### Outputs: submission.csv, on Drive in Colab
out = None  # @param {type:"raw"}
mount_drive = True  # @param {type:"boolean"}
quick = False  # @param {type:"boolean"}

# %%
from landmarklib.notebook import check_parameters

globals().update(check_parameters("submission", globals()))   # every -p: a known name, the right type

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from IPython.display import display

from landmarklib import runs
from landmarklib.data import load_split
from landmarklib.notebook import choose_runs, output_path, prepare_data, runs_root
from landmarklib.plots import landmark_grid, plot_runs, save
from landmarklib.predict import predict_split
from landmarklib.score import score_submission
from landmarklib.submission import read_submission, write_submission

root = runs_root(mount_drive)
runs_table = runs.table(root)
display(runs_table)
best = runs_table.dropna(subset=["best_mse_px"]).head(5)
if len(best):
    save(plot_runs(runs.histories(root, list(best["run"])), f"the {len(best)} best runs in {root}"),
         root / "runs.png")
    plt.show()

# %%
prepare_data(data_dir, zip_path, test_points_path, demo, quick)
sources = choose_runs(run_dirs, root, checkpoint, runs_table)
print(f"checkpoints from: {', '.join(map(str, sources))}")
csv_out = output_path(out, "submission.csv", mount_drive)
test = load_split(data_dir, "test")
pred = predict_split([Path(r) / checkpoint for r in sources], data_dir, "test", tta, device)
csv_out.parent.mkdir(parents=True, exist_ok=True)
write_submission(csv_out, test.names, pred, test.indices, source=", ".join(map(str, sources)))
names, points = read_submission(csv_out, Path(data_dir) / "test" / "test_points.csv")   # validates the file
print(f"{csv_out}: {len(names)} rows, valid; from {len(sources)} run(s), tta {tta}")

# %%
pick = np.linspace(0, len(test.names) - 1, 8).astype(int)
fig = landmark_grid([test.image_path(i) for i in pick], [pred[i] for i in pick],
                    [test.landmarks[i] for i in pick] if test.landmarks is not None else None,
                    titles=[test.names[i][:8] for i in pick])
save(fig, csv_out.with_suffix(".png"))
plt.show()

# %%
if test.landmarks is not None:
    print(f"local score (synthetic ground truth): MSE {score_submission(csv_out, data_dir):.3f}")
else:
    print("no test ground truth here: submit the file to the leaderboard")
