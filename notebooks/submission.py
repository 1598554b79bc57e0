# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     gpuType: T4
#     provenance: []
#   jupytext:
#     notebook_metadata_filter: accelerator,colab
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Submission: predict the test set, write and validate `submission.csv`, score when truth exists
#
# Several run dirs average their predictions in original pixels (an ensemble); `tta = "flip"` also
# averages each image with its mirror (landmarks re-indexed).

# %% [markdown]
# **Setup.** In Colab (Runtime → Change runtime type → GPU) this cell clones landmarklib and installs it
# with `--no-deps`, so Colab's own CUDA build of torch is never replaced and no restart is needed.
# Elsewhere it only moves to the repository root, where the paths below are relative to.

# %%
import os
import subprocess
import sys
from pathlib import Path

REPO_URL = "https://github.com/landmarklib/landmarklib"  # or your fork
if "google.colab" in sys.modules:
    repo = Path("/content/landmarklib")
    if not repo.exists():
        subprocess.run(["git", "clone", "-q", REPO_URL, str(repo)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", str(repo)], check=True)
    sys.path.insert(0, str(repo))
    os.chdir(repo)
elif Path.cwd().name == "notebooks":
    os.chdir("..")

# %% tags=["parameters"]
data_dir = "data"
run_dir = None                # one run dir, or a list of them for an ensemble; None: the latest run
checkpoint = "best.pt"
tta = "flip"
out = "runs/submission.csv"
device = "auto"
mount_drive = True            # interactive Colab: runs are on Drive
quick = False

# %%
from landmarklib.notebook import check_parameters

globals().update(check_parameters("submission", globals()))   # every -p: a known name, the right type

# %%
import matplotlib.pyplot as plt
import numpy as np

from landmarklib.data import load_split
from landmarklib.notebook import latest_run, runs_root
from landmarklib.plots import landmark_grid, save
from landmarklib.predict import predict_split
from landmarklib.score import score_submission
from landmarklib.submission import read_submission, write_submission

if run_dir is None:
    run_dir = str(latest_run(runs_root(mount_drive)))
    print(f"latest run: {run_dir}")
run_dirs = [run_dir] if isinstance(run_dir, str) else list(run_dir)
test = load_split(data_dir, "test")
pred = predict_split([Path(r) / checkpoint for r in run_dirs], data_dir, "test", tta, device)
Path(out).parent.mkdir(parents=True, exist_ok=True)
write_submission(out, test.names, pred, test.indices)
names, points = read_submission(out, Path(data_dir) / "test" / "test_points.csv")   # validates the file
print(f"{out}: {len(names)} rows, valid; from {len(run_dirs)} run(s), tta {tta}")

# %%
pick = np.linspace(0, len(test.names) - 1, 8).astype(int)
fig = landmark_grid([test.image_path(i) for i in pick], [pred[i] for i in pick],
                    [test.landmarks[i] for i in pick] if test.landmarks is not None else None,
                    titles=[test.names[i][:8] for i in pick])
save(fig, Path(out).with_suffix(".png"))
plt.show()

# %%
if test.landmarks is not None:
    print(f"local score (synthetic ground truth): MSE {score_submission(out, data_dir):.3f}")
else:
    print("no test ground truth here: submit the file to the leaderboard")
