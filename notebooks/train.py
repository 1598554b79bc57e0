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
# # Train one model
#
# The same `landmarklib.train.fit` as `python -m landmarklib.train`. The run goes to `run_dir`, by
# default `runs/<run name>` (the name spells the recipe; `demo_<run name>` on the demo set), and in
# Colab to `MyDrive/landmarklib/runs/<run name>` on Google Drive, which outlives the runtime. Rerunning the
# notebook from the top after a disconnect unpacks the data again from `zip_path` if it is gone,
# rebuilds the cache and resumes from `last.pt` on Drive: a disconnect costs at most one epoch. A
# finished run is not trained again. Validation MSE is in original-image pixels, the leaderboard's unit.

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
# Every run setting of landmarklib.config.RUN, with its default (a test keeps them equal); papermill -p
# overrides any of them, and each is checked against its declaration before anything is written.
# A value equal to its default leaves the named recipe's. `python -m landmarklib.train --help` says
# what each one does and allows.
data_dir = "data"
run_dir = None                # None: runs/<run name> (on Drive in Colab; demo_<run name> on the demo set)
cache_dir = None              # default <data_dir>/cache; keep it on local disk, never on Drive
arch = "resnet18"
pretrained = "auto"           # auto: ImageNet weights for the contest data, none for the demo set
weights_path = None
epochs = 12
batch_size = 32
lr = None                     # None: 2e-3 from random init, 1e-3 from pretrained weights; quoted for batch 32
optimizer = "adamw"
backbone_lr = 1.0              # the backbone's LR as a fraction of lr (the head's)
momentum = 0.9
nesterov = True
weight_decay = 0.01
schedule = "onecycle"
drop_at = None                # schedule "drop": None drops at 2/3 of the run (8 of 12, the seed recipe)
drop_factor = 0.1
warmup = 0.1                  # fraction of the run (onecycle has its own: 30 %)
restart_at = []
weight_decay_from = 0.0
lr_scaling = "sqrt"
recipe = "landmarklib"        # or "seed": the report's Adam 1e-3, batch 64, x0.1 at epoch 8 of 12
t0 = 4
t_mult = 1
plateau_patience = 1
loss = "smoothl1"
smoothl1_beta = 0.02
wing_w = 0.04
wing_eps = 0.008
crop_size = 128
resize_mode = "crop"
augment = "flip"
ema = 0.0                     # weight averaging: time constant as a fraction of the run (0: off)
precise_bn = 2048             # training images that recompute BatchNorm statistics before validation
val_fraction = 0.2
blocklist = None
seed = 0
device = "auto"
amp = "auto"                  # auto | bf16 | fp16 | off
channels_last = True
compile = False               # torch.compile (opt-in)
workers = None
batch_order = "random"          # random | blocks: how a shuffled epoch reads the cache
max_train_steps = None
# Not run settings: where the data comes from, and the quick profile.
zip_path = None               # the contest zip (e.g. on Drive): unpacked into data_dir when data_dir is gone
test_points_path = None       # the 2020 test_points.csv that came beside the zip
demo = None                   # None: the demo set only for the default data_dir on a fresh clone; True / False
mount_drive = True            # in Colab: runs on Drive
quick = False                 # True: a tiny budget that runs every code path (what the tests run)

# %%
from landmarklib.notebook import check_parameters

globals().update(check_parameters("train", globals()))   # every -p: a known name, the right type

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from landmarklib.colab import interactive_colab
from landmarklib.config import notebook_config, resolve_run_dir
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
save(plot_history(history, Path(run_dir).name), Path(run_dir) / "history.png")
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
                    [truth[i] for i in show], titles=[f"MSE {mse[i]:.1f}" for i in show])
save(fig, Path(run_dir) / "val_predictions.png")
plt.show()
save(plot_error_by_part(error_by_part(pred, truth)), Path(run_dir) / "error_by_part.png")
plt.show()

# %%
note(summary(history.to_dict("records"), run_dir))
