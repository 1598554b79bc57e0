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
# # 4 · Ablation: which knob gave the gain
#
# Trains `train.ipynb` once per arm of a grid and per seed, each run into its own folder under
# `MyDrive/landmarklib/runs/ablation/` (finished runs are skipped, so running again only fills gaps),
# then plots and tabulates validation MSE in original pixels. Each arm turns one knob of the recipe in
# the form. Grids (`grid_name`): `lr_drop` (constant, one drop, two drops, reduce on plateau, cosine;
# then MSE vs SmoothL1 at the best), `loss`, `arch`, `blocklist` (needs `blocklist`), `resize`,
# `warmup`, `optimizer`, `augment`, `restarts`, `batch`.

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
# @markdown ### The grid
grid_name = "lr_drop"  # @param ["lr_drop", "loss", "arch", "blocklist", "warmup", "resize", "optimizer", "augment", "restarts", "batch"]
seeds = [0, 1]  # @param {type:"raw"}
loss_follow_up = True  # @param {type:"boolean"}
blocklist = None  # @param {type:"raw"}
# @markdown ### The recipe every arm shares
arch = "resnet18"  # @param ["resnet18", "resnet34", "resnet50", "resnext50", "resnet101", "efficientnet_b0", "efficientnet_b3", "convnext_tiny", "timm:resnet34d"] {allow-input: true}
epochs = 6  # @param {type:"integer"}
batch_size = 32  # @param {type:"integer"}
lr = None  # @param {type:"raw"}
loss = "smoothl1"  # @param ["mse", "smoothl1", "l1", "wing"]
crop_size = 64  # @param {type:"integer"}
augment = "flip"  # @param ["none", "flip", "full"]
device = "auto"  # @param {type:"string"}
# @markdown ### Data
# @markdown `zip_path` None: the one zip in MyDrive/landmarklib/. `demo = True`: the synthetic demo set.
zip_path = None  # @param {type:"raw"}
test_points_path = None  # @param {type:"raw"}
demo = None  # @param {type:"raw"}
data_dir = "data"  # @param {type:"string"}
# @markdown ### Outputs: the runs, plots and table, on Drive in Colab
grid_dir = None  # @param {type:"raw"}
mount_drive = True  # @param {type:"boolean"}
quick = False  # @param {type:"boolean"}

# %%
from landmarklib.notebook import check_parameters

globals().update(check_parameters("lr_drop_ablation", globals()))   # every -p: a known name, the right type

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from landmarklib import ablation
from landmarklib.notebook import output_path, prepare_data
from landmarklib.plots import plot_ablation, save
from landmarklib.runs import table as runs_table

prepare_data(data_dir, zip_path, test_points_path, demo, quick)   # the runs below find it unpacked
base = dict(data_dir=str(Path(data_dir).resolve()), arch=arch, epochs=epochs, batch_size=batch_size, lr=lr,
            loss=loss, crop_size=crop_size, augment=augment, device=device)
ablation_root = output_path(grid_dir, "ablation", mount_drive).resolve()
print(f"runs in {ablation_root}")
notebook = Path("notebooks/train.ipynb").resolve()
configs = ablation.grid(grid_name, epochs, str(Path(blocklist).resolve()) if blocklist else None)
runs = ablation.run_grid(configs, base, seeds, ablation_root, notebook, quick)
table = ablation.results_table(runs, grid_name)

# %%
fig = plot_ablation(ablation.histories(runs), ablation.drop_epochs(configs, base),
                    ablation.title(grid_name, configs, base, seeds))
save(fig, ablation_root / f"ablation_{grid_name}.png")
plt.show()

# %% [markdown]
# Then one knob more at a time, at the configuration that won above: the loss (MSE vs SmoothL1), and,
# when `blocklist` is given, training with vs without the rows the EDA notebook flagged.

# %%
best = ablation.best_configuration(table)
follow_ups = ablation.follow_ups(grid_name, configs, best, loss, loss_follow_up,
                                 str(Path(blocklist).resolve()) if blocklist else None)
for knob, knob_configs in follow_ups.items():
    knob_runs = ablation.run_grid(knob_configs, base, seeds, ablation_root, notebook, quick)
    fig = plot_ablation(ablation.histories(knob_runs), ablation.drop_epochs(knob_configs, base),
                        f"{knob} at the best {grid_name} configuration ({best})")
    save(fig, ablation_root / f"ablation_{knob}.png")
    plt.show()
    table = pd.concat([table, ablation.results_table(knob_runs, knob)], ignore_index=True)

# %%
csv_path, md_path = ablation.write_results(table, ablation_root)
print(f"wrote {csv_path} and {md_path}")
display(Markdown(md_path.read_text()))

# %% [markdown]
# Every run of this folder, best validation MSE first (the submission notebook shows every run you have).

# %%
display(runs_table(ablation_root))
