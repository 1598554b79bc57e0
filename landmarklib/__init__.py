"""landmarklib: 971-point facial landmark regression for the "Thousand Facial Landmarks" contest.

One module per step of the data flow: data (format, checks) -> cache (decode once) -> augment ->
models -> losses / schedules -> train (fit, evaluate) -> predict -> submission / score; plus
layout (point groups, flip permutation), geometry (pixel conventions), synth (demo set), eda (bad
annotations), ablation and plots (what the notebooks show), atomic (safe writes).
"""

__version__ = "0.1.0"
