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
# # 1 · Data: the contest archive, checked and cached
#
# Start here: it tells you whether the data is right before you spend GPU time on it. In Colab, put
# the contest zip in `MyDrive/landmarklib/` on Google Drive (the 2020 `test_points.csv` beside it, if
# yours came separately), choose a GPU runtime (Runtime → Change runtime type) and run all cells. The
# notebook signs in to Drive, copies the zip to this runtime's local disk, unpacks it into `data/`,
# checks every file, builds the decode cache and draws a few faces with their landmarks. The other
# notebooks bring the data back the same way on their own runtimes: nothing here needs keeping.
#
# No zip yet? Set `demo = True`: a synthetic demo set in the exact contest format (with test labels,
# so a submission can be scored, and planted bad annotations), made in seconds.

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
# @markdown ### Data
# @markdown `zip_path` None: the one zip in MyDrive/landmarklib/. `demo = True`: the synthetic demo set.
zip_path = None  # @param {type:"raw"}
test_points_path = None  # @param {type:"raw"}
demo = None  # @param {type:"raw"}
data_dir = "data"  # @param {type:"string"}
# @markdown ### Decode cache
crop_size = 128  # @param {type:"integer"}
resize_mode = "crop"  # @param ["crop", "pad"]
cache_dir = None  # @param {type:"raw"}
# @markdown ### Outputs: figures on Drive in Colab
out_dir = None  # @param {type:"raw"}
mount_drive = True  # @param {type:"boolean"}
quick = False  # @param {type:"boolean"}

# %%
from landmarklib.notebook import check_parameters

globals().update(check_parameters("data", globals()))   # every -p: a known name, the right type

# %%
from pathlib import Path

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
