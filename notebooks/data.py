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
run_dir = "runs"              # where figures go
zip_path = None               # e.g. "/content/drive/MyDrive/landmarks/contest.zip"
test_points_path = None
demo = None                   # True: the synthetic demo set (landmarklib.config.DEMO); None: see above
cache_dir = None              # default <data_dir>/cache; keep it on local disk, never on Drive
crop_size = 128
resize_mode = "crop"
quick = False

# %%
from landmarklib.notebook import check_parameters

globals().update(check_parameters("data", globals()))   # every -p: a known name, the right type

# %%
import matplotlib.pyplot as plt
import numpy as np

from landmarklib import data
from landmarklib.cache import build_cache, cache_root
from landmarklib.config import QUICK_DEMO
from landmarklib.notebook import prepare_data
from landmarklib.plots import landmark_grid, save

if quick:
    crop_size = QUICK_DEMO["crop_size"]
prepare_data(data_dir, zip_path, test_points_path, demo, quick)

# %%
report = data.check(data_dir)
print(data.format_report(report))

# %%
for split in ("train", "test"):
    cache = build_cache(data_dir, split, cache_root(data_dir, cache_dir), crop_size, resize_mode)
    print(f"{split}: {cache.images.shape} uint8 in {cache.path}")
sizes = data.footprint(data_dir, cache_root(data_dir, cache_dir))   # local disk: about 80 GB free in Colab
print("\n".join(f"{k:>24}: {v / 2**30:7.2f} GiB" for k, v in sizes.items()))
print(f"{'in all':>24}: {sum(sizes.values()) / 2**30:7.2f} GiB")

# %% [markdown]
# Training images with their landmarks, coloured by face part:

# %%
train = data.load_split(data_dir, "train")
pick = np.linspace(0, len(train.names) - 1, 8).astype(int)
fig = landmark_grid([train.image_path(i) for i in pick], [train.landmarks[i] for i in pick],
                    titles=[train.names[i][:8] for i in pick])
save(fig, Path(run_dir) / "data_grid.png")
plt.show()
