"""landmarklib: 971-point facial landmark regression for the "Thousand Facial Landmarks" contest.

One module per concept, data flowing one way:
  data (format, checks) -> cache (decode once) -> augment -> models -> losses / schedules
  -> train (train_one_epoch, evaluate, train_model: the one training core; fit; CLI)
  -> predict (inference, TTA, ensembles) -> submission / score.
Beside the flow: config (defaults, quick profiles, validation, run names), averaging (weight
averaging and precise BatchNorm statistics: the weights a run validates), runtime (device,
precision), geometry (pixel conventions and the codec: labels <-> targets <-> original pixels),
metric (the contest MSE), layout (point groups, flip permutation), synth (demo set), eda (bad
annotations), ablation and plots (what the notebooks show), atomic (safe writes), notebook (parameters,
data and outputs of the notebooks), cells (the notebooks' setup and parameters cells, written from the
declarations), colab (interactive or headless, Drive, the setup cell's work, installing into Colab),
progress (bars for a terminal, a notebook, or a headless kernel).
"""

__version__ = "0.1.0"
