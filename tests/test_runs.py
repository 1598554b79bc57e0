import json
import shutil

import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import TINY_RUN
from landmarklib import runs
from landmarklib.atomic import run_lock
from landmarklib.errors import DataError
from landmarklib.notebook import choose_runs
from landmarklib.train import fit

TINY = TINY_RUN | {"epochs": 2, "max_train_steps": 2}


@pytest.fixture(scope="module")
def runs_folder(synth_dir, tmp_path_factory):
    """Two finished runs (seeds 0, 1), one interrupted after epoch 1, one running, one damaged, and one
    trained on other data."""
    root = tmp_path_factory.mktemp("runs")
    cache = root.parent / "cache"
    for seed in (0, 1):
        fit(TINY | {"data_dir": str(synth_dir), "cache_dir": str(cache), "run_dir": str(root / f"s{seed}"),
                    "seed": seed}, progress=False)
    shutil.copytree(root / "s0", root / "interrupted")
    history = (root / "interrupted" / "history.csv").read_text().splitlines()
    (root / "interrupted" / "history.csv").write_text("\n".join(history[:2]) + "\n")
    shutil.copytree(root / "interrupted", root / "running")
    shutil.copytree(root / "s1", root / "grid" / "contest")              # a grid's run, on other data
    cfg = json.loads((root / "grid" / "contest" / "config.json").read_text())
    cfg["data"] = {"landmarks_csv_sha256": "0123456789abcdef", "train_images": 393931, "synthetic": False}
    (root / "grid" / "contest" / "config.json").write_text(json.dumps(cfg))
    h = pd.read_csv(root / "grid" / "contest" / "history.csv")
    h["val_mse_px"] *= 10                                              # other data, other figures
    h.to_csv(root / "grid" / "contest" / "history.csv", index=False)
    (root / "damaged").mkdir()
    (root / "damaged" / "config.json").write_text('{"epochs": 2, "arch"')   # cut mid-write
    return root


def test_the_table_shows_every_run_best_first_and_a_damaged_one_as_damaged(runs_folder):
    with run_lock(runs_folder / "running"):                              # a live process holds it
        df = runs.table(runs_folder)
    rows = df.set_index("run")
    assert sorted(df["run"]) == ["damaged", "grid/contest", "interrupted", "running", "s0", "s1"]
    assert df["best_mse_px"].iloc[:-1].is_monotonic_increasing and df["run"].iloc[-1] == "damaged"
    assert rows.loc["s0", "state"] == "finished" and rows.loc["s0", "epochs"] == "2/2"
    assert rows.loc["interrupted", "state"] == "resumable" and rows.loc["interrupted", "epochs"] == "1/2"
    assert rows.loc["running", "state"] == "running"
    assert rows.loc["damaged", "state"].startswith("damaged: ")
    assert rows.loc["s0", "data"].startswith("demo ") and rows.loc["grid/contest", "data"] == "contest 01234567"
    assert rows.loc["s1", "settings"] == "epochs 2, batch_size 8, lr 0.002, crop_size 32, seed 1, device cpu, workers 1, " \
                                         "max_train_steps 2"
    assert rows.loc["s0", "best_mse_px"] == round(min(float(v) for v in [
        line.split(",")[3] for line in (runs_folder / "s0" / "history.csv").read_text().splitlines()[1:]]), 3)


def test_best_k_takes_the_best_finished_runs_on_the_same_data_and_refuses_a_mixed_folder(runs_folder, capsys):
    df = runs.table(runs_folder)
    demo = df[(df["state"] == "finished") & df["data"].str.startswith("demo")]
    assert sorted(demo["run"]) == ["s0", "s1"]                           # not the interrupted, the running, the damaged
    assert choose_runs("best:2", runs_folder) == [runs_folder / r for r in demo["run"]]
    out = capsys.readouterr().out
    assert "left out 1 finished run(s) trained on other data or another split" in out and "best validation MSE" in out
    with pytest.raises(DataError, match=r"best:3 needs 3 finished runs on the data and validation split of the best "
                                        r"one .*; 2 are, and 1 more were trained on other data"):
        choose_runs("best:3", runs_folder)
    with pytest.raises(DataError, match=r"best:K takes a whole number K"):
        choose_runs("best:x", runs_folder)


def test_a_finished_run_writes_its_settings_and_metrics_for_tensorboards_hparams(runs_folder):
    acc = EventAccumulator(str(runs_folder / "s0" / "tb")).Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["arch"].string_value == "resnet18" and start.hparams["batch_size"].number_value == 8
    assert start.hparams["drop_at"].string_value == "[1]"                 # a list, as text (scaled to 2 epochs)
    best = acc.Scalars("hparam/best_val_mse_px")
    history = (runs_folder / "s0" / "history.csv").read_text().splitlines()[1:]
    assert best[0].value == pytest.approx(min(float(line.split(",")[3]) for line in history), rel=1e-6)
    assert not [p for p in (runs_folder / "s0" / "tb").iterdir() if p.is_dir()]   # beside the scalars: one run
