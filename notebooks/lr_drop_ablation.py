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
# # Ablation: which knob gave the gain
#
# Runs `train.ipynb` through papermill once per configuration and seed, each into its own run dir
# named by its recipe (finished runs are skipped, so rerunning this notebook only fills gaps), then
# compares validation MSE in original pixels. Every run is the default recipe with one knob turned.
# The default grid is the LR schedule (constant, one drop, two drops, reduce-on-plateau, cosine),
# then MSE vs SmoothL1 at the best schedule. Other grids (`-p grid_name NAME`): `loss`, `arch`
# (resnext50 vs resnet101), `blocklist` (with vs without the EDA's flagged rows), `resize` (centre
# crop vs pad), `warmup` (none, 5 %, 20 % of the run), `optimizer` (Adam, AdamW, Adam then AdamW
# from half-way), `augment` (none, flip, full; the table gives the images/s each costs), `restarts`
# (one drop vs drop, back to the peak, drop again), `batch` (64 vs 256, LR scaled by sqrt or linearly).

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
grid_dir = None               # every run of the grid goes under here; None: runs/ablation (Drive in Colab)
grid_name = "lr_drop"
seeds = [0, 1]
arch = "resnet18"
epochs = 6
batch_size = 32
lr = None                     # None: 2e-3 from random init, 1e-3 from pretrained weights; quoted for batch 32
loss = "smoothl1"
crop_size = 64
augment = "flip"
blocklist = None              # the blocklist grid needs bad_annotations.csv from eda_bad_annotations.ipynb
device = "auto"
zip_path = None               # the contest zip (e.g. on Drive): unpacked into data_dir on a fresh runtime
test_points_path = None
demo = None
mount_drive = True            # in Colab: runs on Drive
loss_follow_up = True         # lr_drop grid: then MSE vs SmoothL1 at the best schedule
# blocklist (above), when given: then with vs without the flagged rows at the best configuration
quick = False

# %%
from landmarklib.notebook import check_parameters

globals().update(check_parameters("lr_drop_ablation", globals()))   # every -p: a known name, the right type

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from landmarklib import ablation
from landmarklib.colab import install_missing
from landmarklib.notebook import output_path, prepare_data
from landmarklib.plots import plot_ablation, save

install_missing(["papermill>=2.5"])   # not preinstalled in Colab; installed without touching Colab's packages
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
