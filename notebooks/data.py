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
# # Data: the contest archive (or the synthetic demo set), checked and cached
#
# With `zip_path` set (in Colab: the contest zip on your Drive, which is mounted for it), the zip is
# copied to local disk, unpacked into `data_dir` and the local copy removed; the 2020
# `test_points.csv` that came separately is picked up from `test_points_path` or from next to the zip.
# `demo = True` makes the synthetic demo set instead (same layout, same point semantics, with test
# ground truth and planted bad annotations), only into a new or empty folder; by default (`None`) it
# is made only for the default `data_dir` on a fresh clone, and any other missing folder is an error.

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
out_dir = None                # where the figures go; None: <runs folder>/data (on Drive in Colab)
zip_path = None               # e.g. "/content/drive/MyDrive/landmarks/contest.zip"
test_points_path = None
demo = None                   # True: the synthetic demo set (landmarklib.config.DEMO); None: see above
cache_dir = None              # default <data_dir>/cache; keep it on local disk, never on Drive
crop_size = 128
resize_mode = "crop"
mount_drive = True            # in Colab: the figures go to Drive
quick = False

# %%
from landmarklib.notebook import check_parameters

globals().update(check_parameters("data", globals()))   # every -p: a known name, the right type

# %%
import matplotlib.pyplot as plt
import numpy as np

from landmarklib import data
from landmarklib.cache import cache_root, check_and_build
from landmarklib.notebook import output_path, prepare_data
from landmarklib.plots import landmark_grid, save

prepare_data(data_dir, zip_path, test_points_path, demo, quick)
figures = output_path(out_dir, "data", mount_drive)

# %%
# Each CSV is parsed once: the check and the cache share it (landmarks.csv is 3 GB in the contest).
report, caches = check_and_build(data_dir, cache_root(data_dir, cache_dir), crop_size, resize_mode)
print(data.format_report(report))
for split, cache in caches.items():
    print(f"{split}: {cache.images.shape} uint8 in {cache.path}")
sizes = data.footprint(data_dir, cache_root(data_dir, cache_dir))   # local disk: about 80 GB free in Colab
print("\n".join(f"{k:>24}: {v / 2**30:7.2f} GiB" for k, v in sizes.items()))
print(f"{'in all':>24}: {sum(sizes.values()) / 2**30:7.2f} GiB")

# %% [markdown]
# Training images with their landmarks, coloured by face part (labels from the cache, not the CSV):

# %%
train = caches["train"]
pick = np.linspace(0, len(train) - 1, 8).astype(int)
fig = landmark_grid([Path(data_dir) / "train" / "images" / train.names[i] for i in pick],
                    [train.landmarks[i].astype(np.float64) for i in pick], titles=[train.names[i][:8] for i in pick])
save(fig, figures / "data_grid.png")
print(f"figures in {figures}")
plt.show()
