"""Figures a person reads in Colab: no wider than the output area, no type too small to read."""
import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

from landmarklib import eda, plots  # noqa: E402
from landmarklib.data import load_split  # noqa: E402

MAX_WIDTH_IN = 11     # at Colab's 100 dpi, 1,100 px: shown without shrinking on a laptop's screen
MIN_POINTS = 9        # 9 pt at 100 dpi is 12.5 px


def _history(n=6):
    return pd.DataFrame({"epoch": range(1, n + 1), "train_loss": np.geomspace(0.1, 0.01, n),
                         "lr": np.geomspace(2e-3, 1e-5, n), "val_mse_px": np.geomspace(300, 9, n),
                         "val_mse30_px": np.geomspace(310, 9.5, n)})


@pytest.fixture(scope="module")
def figures(synth_dir):
    split = load_split(synth_dir, "train")
    truth = [split.landmarks[i].astype(float) for i in range(4)]
    scores = eda.score_annotations(synth_dir, use_model=False, progress=False)
    curves = {"constant": [_history()], "one drop @4": [_history(), _history()]}
    return {"history": plots.plot_history(_history(), "a_run_name"),
            "landmark_grid": plots.landmark_grid([split.image_path(i) for i in range(4)], truth, truth,
                                                 titles=["MSE 1.0 px²"] * 4),
            "error_by_part": plots.plot_error_by_part(plots.error_by_part(np.stack(truth) + 1, np.stack(truth))),
            "ablation": plots.plot_ablation(curves, {"one drop @4": [4]}, "lr_drop: resnet18"),
            "score_histogram": plots.plot_score_histogram(scores)}


@pytest.mark.parametrize("name", ["history", "landmark_grid", "error_by_part", "ablation", "score_histogram"])
def test_every_figure_fits_colabs_output_and_its_type_is_legible(figures, name):
    fig = figures[name]
    fig.canvas.draw()
    assert fig.get_size_inches()[0] <= MAX_WIDTH_IN
    texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_text().strip() and t.get_visible()]
    assert texts
    small = [(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < MIN_POINTS]
    assert not small, small


def test_the_score_histogram_says_each_stages_threshold_and_counts_failed_rules_apart(figures, synth_dir):
    fig = figures["score_histogram"]
    text = " ".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))
    assert "implausible shape: " in text and "points far outside the image:" not in text    # a rule has no z
    assert "labels flagged" in fig.axes[0].get_title()
