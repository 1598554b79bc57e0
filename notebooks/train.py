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
# # 3 · Train one model
#
# Choose an architecture (and anything else in the form) and run all cells. The run goes to
# `MyDrive/landmarklib/runs/<run name>` in Colab (`runs/` elsewhere); its name spells the recipe, so
# two recipes never share a folder. After a disconnect, run all again: the data comes back from the
# zip and training resumes from the last epoch saved on Drive; a finished run is not trained again.
# Validation MSE is in original-image pixels, the leaderboard's unit.

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
# @markdown ### What to train
# @markdown `None` takes the recipe's value. The landmarklib recipe's: epochs 12, batch_size 32, crop_size 128,
# @markdown loss smoothl1, augment flip; lr 0.002 from random init, 0.001 from pretrained weights.
arch = "resnet18"  # @param ["resnet18", "resnet34", "resnet50", "resnext50", "resnet101", "efficientnet_b0", "efficientnet_b3", "convnext_tiny", "timm:resnet34d"] {allow-input: true}
pretrained = "auto"  # @param ["auto", "true", "false"]
recipe = "landmarklib"  # @param ["landmarklib", "seed", "ablation", "eda"]
epochs = None  # @param {type:"raw"}
batch_size = None  # @param {type:"raw"}
lr = None  # @param {type:"raw"}
crop_size = None  # @param {type:"raw"}
loss = None  # @param {type:"raw"}
augment = None  # @param {type:"raw"}
blocklist = None  # @param {type:"raw"}
seed = 0  # @param {type:"integer"}
# @markdown ### Data
# @markdown `zip_path` None: the one zip in MyDrive/landmarklib/. `demo = True`: the synthetic demo set.
zip_path = None  # @param {type:"raw"}
test_points_path = None  # @param {type:"raw"}
demo = None  # @param {type:"raw"}
data_dir = "data"  # @param {type:"string"}
# @markdown ### Outputs: the run dir, on Drive in Colab
run_dir = None  # @param {type:"raw"}
mount_drive = True  # @param {type:"boolean"}
quick = False  # @param {type:"boolean"}
# Every other run setting, at its default (None: the recipe's value, for optimizer, weight_decay,
# schedule, drop_at, drop_factor, warmup, lr_scaling, resize_mode, precise_bn). `python -m
# landmarklib.train --help` says what each one does and allows.
cache_dir = None
weights_path = None
optimizer = None
backbone_lr = 1.0
momentum = 0.9
nesterov = True
weight_decay = None
schedule = None
drop_at = None
drop_factor = None
warmup = None
restart_at = []
weight_decay_from = 0.0
lr_scaling = None
t0 = 4
t_mult = 1
plateau_patience = 1
smoothl1_beta = 0.02
wing_w = 0.04
wing_eps = 0.008
resize_mode = None
ema = 0.0
precise_bn = None
val_fraction = 0.2
device = "auto"
amp = "auto"
channels_last = True
compile = False
workers = None
batch_order = "random"
max_train_steps = None

# %%
from landmarklib.notebook import check_parameters

globals().update(check_parameters("train", globals()))   # every -p: a known name, the right type

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from landmarklib.colab import interactive_colab
from landmarklib.config import notebook_config, resolve_run_dir, run_name
from landmarklib.cache import build_cache, cache_root
from landmarklib.data import split_indices
from landmarklib.metric import mse_per_image
from landmarklib.notebook import prepare_data, runs_root
from landmarklib.plots import error_by_part, landmark_grid, plot_error_by_part, plot_history, save
from landmarklib.predict import predict_split
from landmarklib.progress import note
from landmarklib.train import fit, summary

PLOT_SAMPLE = 2000   # validation images drawn and broken down by face part below
prepare_data(data_dir, zip_path, test_points_path, demo, quick)
config = notebook_config(globals(), quick)
config = resolve_run_dir(config, config["run_dir"] or runs_root(mount_drive))   # None: <runs folder>/<run name>
run_dir = config["run_dir"]
note(f"run dir: {run_dir}")
if interactive_colab():   # live curves while the run trains (event files in <run_dir>/tb); never headless
    get_ipython().run_line_magic("load_ext", "tensorboard")
    get_ipython().run_line_magic("tensorboard", f"--logdir '{run_dir}'")
history = pd.DataFrame(fit(config))
history

# %%
save(plot_history(history, run_name(config)), Path(run_dir) / "history.png")
plt.show()

# %% [markdown]
# Validation images: prediction (coloured by part) over the truth (white), and the error per face part.

# %%
# A sample of the validation split (all of it on the demo set): the plots stay quick at the contest's
# 78,786 validation images, and the labels come from the decode cache, not a 3 GB parse of the CSV.
train = build_cache(data_dir, "train", cache_root(data_dir, cache_dir), config["crop_size"], config["resize_mode"],
                    progress=False)
_, val_idx = split_indices(len(train), config["val_fraction"])
rows = val_idx[np.unique(np.linspace(0, len(val_idx) - 1, min(len(val_idx), PLOT_SAMPLE)).astype(int))]
pred = predict_split([Path(run_dir) / "best.pt"], data_dir, "train", cache_dir=cache_dir, rows=rows, device=device,
                     progress=False)
truth = train.landmarks[rows].astype(np.float64)
mse = mse_per_image(pred, truth)
show = np.argsort(mse)[np.linspace(0, len(mse) - 1, 8).astype(int)]
fig = landmark_grid([Path(data_dir) / "train" / "images" / train.names[rows[i]] for i in show], [pred[i] for i in show],
                    [truth[i] for i in show], titles=[f"MSE {mse[i]:.1f} px²" for i in show])
save(fig, Path(run_dir) / "val_predictions.png")
plt.show()
save(plot_error_by_part(error_by_part(pred, truth)), Path(run_dir) / "error_by_part.png")
plt.show()

# %%
note(summary(history.to_dict("records"), run_dir))
