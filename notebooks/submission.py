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
# **Setup.** In Colab (Runtime → Change runtime type → GPU) this cell clones landmarklib (or updates
# the clone) and installs it with `--no-deps`, so Colab's own CUDA build of torch and its kernel
# packages are never replaced and no restart is needed. Elsewhere it only moves to the repository
# root, where the paths below are relative to.

# %%
import os
import subprocess
import sys
from pathlib import Path

REPO_URL = "https://github.com/landmarklib/landmarklib"  # or your fork (then also the badges in README.md)
if Path.cwd().name == "notebooks":   # Jupyter started in notebooks/: work from the repository root
    os.chdir("..")
if "google.colab" in sys.modules and not Path("landmarklib/__init__.py").is_file():
    # Opened from a badge: a Colab runtime in /content. Clone the repository, or update the clone an
    # earlier session left, then install it with --no-deps (Colab's torch and kernel stay as they are).
    # A headless run (papermill) starts at the repository root and skips all of this.
    repo = Path("landmarklib").resolve()
    if not repo.is_dir():
        subprocess.run(["git", "clone", "-q", REPO_URL, str(repo)], check=True)
    elif subprocess.run(["git", "-C", str(repo), "pull", "-q", "--ff-only"]).returncode:
        print(f"could not update {repo} (see git's message above); using it as it is")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", str(repo)], check=True)
    sys.path.insert(0, str(repo))
    os.chdir(repo)

# %% tags=["parameters"]
data_dir = "data"
run_dirs = None               # one run dir, or a list of them for an ensemble; None: the latest run
checkpoint = "best.pt"
tta = "flip"
out = None                    # None: <runs folder>/submission.csv (on Drive in Colab)
zip_path = None               # the contest zip (e.g. on Drive): unpacked into data_dir on a fresh runtime
test_points_path = None
demo = None
device = "auto"
mount_drive = True            # in Colab: runs are on Drive, and submission.csv goes there
quick = False

# %%
from landmarklib.notebook import check_parameters

globals().update(check_parameters("submission", globals()))   # every -p: a known name, the right type

# %%
import matplotlib.pyplot as plt
import numpy as np

from landmarklib.data import load_split
from landmarklib.notebook import latest_run, output_path, prepare_data, runs_root
from landmarklib.plots import landmark_grid, save
from landmarklib.predict import predict_split
from landmarklib.score import score_submission
from landmarklib.submission import read_submission, write_submission

prepare_data(data_dir, zip_path, test_points_path, demo, quick)
sources = [run_dirs] if isinstance(run_dirs, str) else run_dirs or [latest_run(runs_root(mount_drive))]
print(f"checkpoints from: {', '.join(map(str, sources))}")
csv_out = output_path(out, "submission.csv", mount_drive)
test = load_split(data_dir, "test")
pred = predict_split([Path(r) / checkpoint for r in sources], data_dir, "test", tta, device)
csv_out.parent.mkdir(parents=True, exist_ok=True)
write_submission(csv_out, test.names, pred, test.indices)
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
