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
# up as label/prediction disagreement. Writes `bad_annotations.csv` for `train.ipynb`'s `blocklist`.

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
run_dir = "runs"
out = "runs/bad_annotations.csv"
use_model = True              # False: the fast shape-only stage
k = 12.0                      # flag when a robust z-score exceeds k
folds = 4                     # the out-of-fold models (landmarklib.config.EDA)
epochs = 6
crop_size = 64
device = "auto"
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
from landmarklib.config import QUICK_EDA
from landmarklib.plots import landmark_grid, plot_score_histogram, save

if quick:
    folds, epochs, crop_size = (QUICK_EDA[k] for k in ("folds", "epochs", "crop_size"))
kw = {"folds": folds, "epochs": epochs, "crop_size": crop_size, "device": device} if use_model else {}
scores = eda.score_annotations(data_dir, use_model, k, **kw)
Path(out).parent.mkdir(parents=True, exist_ok=True)
with atomic_path(out) as tmp:
    scores.to_csv(tmp, index=False)
print(eda.summary(scores), "->", out)
scores.head(10)

# %%
save(plot_score_histogram(scores, k), Path(run_dir) / "eda_scores.png")
plt.show()

# %% [markdown]
# The worst-ranked images, labels drawn on them:

# %%
top = scores.head(8)
fig = landmark_grid(*eda.labelled_images(data_dir, top),   # reads only these lines of landmarks.csv
                    titles=[f"{r.reason} (z {r.score:.0f})" for r in top.itertuples()])
save(fig, Path(run_dir) / "eda_worst.png")
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
