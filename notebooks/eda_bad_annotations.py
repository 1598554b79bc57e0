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
# # Bad annotations: rank every training label by how implausible it is
#
# Shape stage (seconds): points far outside the image, a Procrustes + PCA shape model, group geometry.
# Image stage: out-of-fold predictions of a quick model; a plausible shape in the wrong place shows
# up as label/prediction disagreement. Writes `bad_annotations.csv` for `train.ipynb`'s `blocklist`,
# the figures and each finished out-of-fold model's scores into `out_dir` (on Drive in Colab): rerun
# after a disconnect, it takes up the folds already done.

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
out_dir = None                # bad_annotations.csv, figures, folds; None: <runs folder>/eda (Drive in Colab)
out = None                    # None: <out_dir>/bad_annotations.csv
zip_path = None               # the contest zip (e.g. on Drive): unpacked into data_dir on a fresh runtime
test_points_path = None
demo = None
use_model = True              # False: the fast shape-only stage
k = None                      # None: each stage's threshold from its own scores; a number: one robust z for all
folds = 4                     # the out-of-fold models (their recipe: landmarklib.config.RECIPES["eda"])
epochs = 6
crop_size = 64
device = "auto"
mount_drive = True            # in Colab: outputs on Drive
quick = False

# %%
from landmarklib.notebook import check_parameters

globals().update(check_parameters("eda_bad_annotations", globals()))   # every -p: a known name, the right type

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from landmarklib import eda
from landmarklib.atomic import atomic_path
from landmarklib.notebook import output_path, prepare_data
from landmarklib.plots import landmark_grid, plot_score_histogram, save

prepare_data(data_dir, zip_path, test_points_path, demo, quick)
eda_dir = output_path(out_dir, "eda", mount_drive)
csv_out = Path(out) if out else eda_dir / "bad_annotations.csv"
kw = {"folds": folds, "epochs": epochs, "crop_size": crop_size, "device": device,
      "fold_dir": eda_dir / "folds"} if use_model else {}
scores = eda.score_annotations(data_dir, use_model, k, **kw)
csv_out.parent.mkdir(parents=True, exist_ok=True)
with atomic_path(csv_out) as tmp:
    scores.to_csv(tmp, index=False)
print(eda.summary(scores), "->", csv_out)
scores.head(10)

# %%
save(plot_score_histogram(scores), eda_dir / "eda_scores.png")
plt.show()

# %% [markdown]
# The worst-ranked images, labels drawn on them:

# %%
top = scores.head(8)
fig = landmark_grid(*eda.labelled_images(data_dir, top),   # reads only these lines of landmarks.csv
                    titles=[f"{r.reason} ({r.score:.1f}x threshold)" for r in top.itertuples()])
save(fig, eda_dir / "eda_worst.png")
print(f"figures in {eda_dir}")
plt.show()

# %% [markdown]
# One example per reason:

# %%
flagged = scores[scores.flagged].drop_duplicates("reason")
if len(flagged):
    fig = landmark_grid(*eda.labelled_images(data_dir, flagged), titles=list(flagged.reason))
    plt.show()

# %% [markdown]
# On the synthetic set the planted corruptions are known, so the detector itself is measured:

# %%
planted = Path(data_dir) / "train" / "planted_bad.csv"
if planted.is_file():
    display(eda.precision_recall(scores, pd.read_csv(planted)))
