"""ablation.py: the grids, their runs as papermill kernels, and the results table."""
import json

import pandas as pd
import pytest

from landmarklib import ablation
from landmarklib.config import make_config, run_name
from landmarklib.errors import DataError
from landmarklib.schedules import lr_factor, peak_lr, weight_decay_at


# The knobs each grid may turn: one question per grid (a schedule needs its epochs, AdamW its decay,
# a batch size its LR rule).
KNOBS = {"lr_drop": {"schedule", "drop_at"}, "restarts": {"schedule", "drop_at", "restart_at"},
         "optimizer": {"optimizer", "weight_decay", "weight_decay_from"}, "batch": {"batch_size", "lr_scaling"}}


@pytest.mark.parametrize("name", ablation.GRIDS)
def test_each_grid_turns_one_knob_and_makes_valid_configs(name):
    g = ablation.grid(name, 12, blocklist="bad.csv")
    knobs = {k for overrides in g.values() for k in overrides}
    assert len(g) >= 2
    assert knobs <= KNOBS[name] if name in KNOBS else len(knobs) == 1
    cfgs = [make_config({"epochs": 12} | ov) for ov in g.values()]      # every arm is a valid run
    assert len({run_name(c) for c in cfgs}) == len(g)                     # and a run of its own


def test_the_new_grids_ask_the_reports_questions():
    opt = {label: make_config(ov | {"epochs": 12}) for label, ov in ablation.grid("optimizer", 12).items()}
    assert [weight_decay_at(c, 0) for c in opt.values()] == [0.0, ablation.ADAMW_DECAY, 0.0]
    assert weight_decay_at(opt["adam, adamw from 1/2"], 6) == ablation.ADAMW_DECAY          # the switch at 6 of 12
    assert [c["augment"] for c in map(make_config, ablation.grid("augment", 6).values())] == ["none", "flip", "full"]
    restarts = make_config(ablation.grid("restarts", 5)["drop @2, restart @3, drop @4"] | {"epochs": 5, "warmup": 0})
    assert [lr_factor(restarts, e) for e in range(5)] == pytest.approx([1, 1, 0.1, 1, 0.1])   # up again, down again
    batch = [make_config(ov | {"lr": 1e-3}) for ov in ablation.grid("batch", 6).values()]
    assert [c["batch_size"] for c in batch] == [64, 256, 256]
    assert [peak_lr(c) for c in batch] == pytest.approx([1e-3 * 2 ** 0.5, 1e-3 * 8 ** 0.5, 8e-3])   # from batch 32
    with pytest.raises(ValueError, match="at least 4 epochs"):
        ablation.grid("restarts", 3)


def test_lr_drop_grid_scales_with_epochs():
    g = ablation.grid("lr_drop", 12)
    assert g["one drop @8"]["drop_at"] == [8] and g["two drops @6,9"]["drop_at"] == [6, 9]
    with pytest.raises(ValueError, match="unknown grid"):
        ablation.grid("dropout", 12)
    with pytest.raises(ValueError, match="needs blocklist"):
        ablation.grid("blocklist", 12)


def test_run_dirs_are_named_by_recipe_and_differ_per_knob(tmp_path):
    base = {"arch": "resnet18", "epochs": 6, "crop_size": 64, "batch_size": 32}
    dirs = {ablation.run_dir_for(base, ov, 0, tmp_path).name for ov in ablation.grid("lr_drop", 6).values()}
    assert len(dirs) == 5 and all(d.startswith("resnet18_smoothl1_b32_e6_64px") for d in dirs)
    assert ablation.run_dir_for(base, {}, 1, tmp_path).name.endswith("_s1")


def test_every_grid_gets_its_own_run_dirs(tmp_path):
    base = {"arch": "resnet18", "epochs": 6}
    for name in ablation.GRIDS:
        g = ablation.grid(name, 6, blocklist="bad.csv")
        assert len({ablation.run_dir_for(base, ov, 0, tmp_path) for ov in g.values()}) == len(g), name


def test_a_grid_knob_the_notebook_lacks_is_refused(tmp_path):
    from pathlib import Path
    nb = Path(__file__).resolve().parents[1] / "notebooks" / "train.ipynb"
    with pytest.raises(ValueError, match=r"has no parameter\(s\) \['dropout'\]"):
        ablation.run_grid({"x": {"dropout": 0.1}}, {"epochs": 2}, [0], tmp_path, nb)


def test_results_table_and_markdown(tmp_path):
    runs = {}
    for label, finals in {"a": [10.0, 12.0], "b": [8.0, 8.0]}.items():
        for seed, final in enumerate(finals):
            d = tmp_path / f"{label}{seed}"
            d.mkdir()
            pd.DataFrame({"epoch": [1, 2], "val_mse_px": [20.0, final], "images_per_s": [100.0, 300.0]}).to_csv(
                d / "history.csv", index=False)
            (d / "config.json").write_text(json.dumps({"name": f"recipe-{label}"}))
            runs.setdefault(label, []).append(d)
    t = ablation.results_table(runs, "knob")
    assert t.set_index("configuration").loc["a", "final_mse_px"] == 11.0
    assert t.set_index("configuration").loc["a", "final_std"] == 1.0
    assert t.set_index("configuration").loc["a", "train_images_per_s"] == 200.0
    assert ablation.best_configuration(t) == "b"
    assert ablation.is_finished(runs["a"][0], 2) and not ablation.is_finished(runs["a"][0], 3)
    csv, md = ablation.write_results(t, tmp_path / "out")
    assert md.read_text().splitlines()[2].startswith("| knob | a | 2 | 11.00 | 1.00 |")


def test_plot_markers_follow_each_arms_resolved_schedule():
    """The base is the default recipe (no schedule given): only arms that drop get drop markers."""
    base = {"epochs": 6}
    marks = ablation.drop_epochs(ablation.grid("restarts", 6), base)
    assert marks == {"one drop @4": [4], "drop @2, restart @3, drop @5": [2, 5], "cosine": []}
    assert ablation.drop_epochs(ablation.grid("loss", 6), base) == {k: [] for k in ("mse", "smoothl1", "l1", "wing")}


def test_the_plot_title_names_only_what_every_arm_shares():
    """The arch grid trains resnext50 and resnet101, so its title must not name the base arch."""
    base = {"arch": "resnet18", "crop_size": 64, "epochs": 5, "batch_size": 32}
    assert ablation.title("lr_drop", ablation.grid("lr_drop", 5), base, [0, 1]) == \
        "lr_drop: resnet18, 64 px, 5 epochs, batch 32, seeds [0, 1]"
    assert ablation.title("arch", ablation.grid("arch", 5), base, [0]) == "arch: 64 px, 5 epochs, batch 32, seeds [0]"
    assert ablation.title("batch", ablation.grid("batch", 5), base, [0]) == "batch: resnet18, 64 px, 5 epochs, seeds [0]"


def test_the_final_mse_bars_go_log_when_an_arm_diverged():
    """Bars of 20 beside 1e7 on a linear axis leave the good arms invisible; within 100x it stays linear."""
    import matplotlib
    matplotlib.use("Agg")
    from landmarklib.plots import plot_ablation

    def curves(finals):
        return {f"arm {i}": [pd.DataFrame({"epoch": [1, 2], "val_mse_px": [400.0, f]})] for i, f in enumerate(finals)}
    assert plot_ablation(curves([20.0, 1e7]), {}, "t").axes[1].get_xscale() == "log"
    assert plot_ablation(curves([20.0, 35.0]), {}, "t").axes[1].get_xscale() == "linear"


def test_a_finished_run_is_not_run_again(tmp_path, monkeypatch):
    """Rerunning the ablation fills gaps only: a run dir holding the same recipe's whole history is
    taken as it is (papermill is never called for it)."""
    import papermill
    from pathlib import Path
    nb = Path(__file__).resolve().parents[1] / "notebooks" / "train.ipynb"
    base = {"arch": "resnet18", "epochs": 4, "crop_size": 32, "batch_size": 8}
    arms = ablation.grid("lr_drop", 4)
    executed = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: executed.append(k["parameters"]["run_dir"]))
    done = ablation.run_dir_for(base, arms["constant"], 0, tmp_path)
    done.mkdir(parents=True)
    (done / "config.json").write_text(json.dumps(ablation._config(base, arms["constant"], 0) | {"run_dir": str(done)}))
    pd.DataFrame({"epoch": [1, 2, 3, 4], "val_mse_px": [4.0, 3.0, 2.0, 1.0]}).to_csv(done / "history.csv", index=False)
    with pytest.raises(DataError, match="holds no run"):         # the stand-in papermill writes no run: the
        ablation.run_grid(arms, base, [0], tmp_path, nb)         # check after the first unfinished run says so
    assert str(done) not in executed and len(executed) == 1
