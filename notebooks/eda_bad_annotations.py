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
# # 2 · Bad annotations: which training labels to leave out
#
# Ranks every training label by how implausible it is and writes `bad_annotations.csv`
# (`MyDrive/landmarklib/runs/eda/` in Colab). Give its path to `train.ipynb` as `blocklist` to train
# without the flagged rows. The shape stage (seconds) compares each face's points with a shape model
# of faces: points far outside the image, a mirrored or scrambled face, wrong proportions. The image
# stage trains `folds` quick models, each predicting the images it did not see, and flags labels far
# from the face the model sees. After a disconnect, run all again: the folds already done are kept.

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
# @markdown ### Detector
# @markdown `k` None: each stage's threshold from its own scores
use_model = True  # @param {type:"boolean"}
k = None  # @param {type:"raw"}
folds = 4  # @param {type:"integer"}
epochs = 6  # @param {type:"integer"}
crop_size = 64  # @param {type:"integer"}
device = "auto"  # @param {type:"string"}
# @markdown ### Data
# @markdown `zip_path` None: the one zip in MyDrive/landmarklib/. `demo = True`: the synthetic demo set.
zip_path = None  # @param {type:"raw"}
test_points_path = None  # @param {type:"raw"}
demo = None  # @param {type:"raw"}
data_dir = "data"  # @param {type:"string"}
# @markdown ### Outputs: bad_annotations.csv and figures on Drive in Colab
out_dir = None  # @param {type:"raw"}
out = None  # @param {type:"raw"}
mount_drive = True  # @param {type:"boolean"}
quick = False  # @param {type:"boolean"}

# %%
from landmarklib.notebook import check_parameters

globals().update(check_parameters("eda_bad_annotations", globals()))   # every -p: a known name, the right type

# %%
from pathlib import Path

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
                    titles=[eda.caption(r) for r in top.itertuples()])
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
