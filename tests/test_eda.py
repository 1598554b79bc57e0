"""eda.py: the bad-annotation detector: its stages, thresholds, gallery and CLI."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import landmarklib.eda as eda_mod
from conftest import peak_bytes, run_cli
from landmarklib import eda
from landmarklib.csvfiles import read_landmarks
from landmarklib.errors import DataError
from landmarklib.synth import CORRUPTIONS, corrupt, face_points, sample_face


@pytest.fixture(scope="module")
def shapes():
    """400 clean faces of varied pose (no rendering needed) and the image widths."""
    rng = np.random.default_rng(7)
    faces = [sample_face(rng) for _ in range(400)]
    return np.stack([face_points(f) for f in faces]), np.array([f["width"] for f in faces]), \
        np.array([2 * f["scale"] for f in faces])


def _planted(shapes, kind, rows):
    pts, widths, sizes = shapes
    out = pts.copy()
    rng = np.random.default_rng(0)
    for r in rows:
        out[r] = corrupt(pts[r], kind, rng, widths[r], pts[(r + 200) % len(pts)], sizes[r])
    return out


def _shape_stage(landmarks) -> None:
    eda.shape_scores(landmarks, fit_max=300, chunk=250, mean_sample=250)
    eda.geometry_reasons(landmarks, chunk=250)


def test_the_eda_folds_are_saved_and_a_rerun_takes_them_up(synth_dir, tmp_path, monkeypatch, capsys):
    kw = {"folds": 2, "epochs": 1, "crop_size": 32, "device": "cpu", "cache_dir": tmp_path / "cache",
          "max_train_steps": 1, "progress": False, "fold_dir": tmp_path / "drive" / "folds"}
    first = eda_mod.out_of_fold_disagreement(synth_dir, **kw)
    assert sorted(p.name for p in (tmp_path / "drive" / "folds").iterdir()) == ["fold1of2.npz", "fold2of2.npz"]
    monkeypatch.setattr(eda_mod, "train_model", lambda *a, **k: pytest.fail("a saved fold was trained again"))
    again = eda_mod.out_of_fold_disagreement(synth_dir, **kw)
    assert first.keys() == again.keys() and all(np.array_equal(first[k], again[k]) for k in first)
    assert "fold 2 of 2: taken from" in capsys.readouterr().out
    # Other settings: that fold is trained again (here: the stand-in says so by failing).
    with pytest.raises(pytest.fail.Exception, match="trained again"):
        eda_mod.out_of_fold_disagreement(synth_dir, **kw | {"epochs": 2})


@pytest.mark.slow
def test_clean_faces_of_varied_pose_are_not_flagged(shapes):
    pts = shapes[0]
    assert (eda.robust_z(eda.shape_scores(pts)) < eda.Z_DEFAULT).all()
    assert (eda.geometry_reasons(pts) == "").all()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mirrored", "scrambled"])
def test_shape_stage_catches_what_a_shape_can_show(shapes, kind):
    rows = np.arange(0, 400, 40)
    pts = _planted(shapes, kind, rows)
    z = eda.robust_z(eda.shape_scores(pts))
    flagged = set(np.flatnonzero(z > eda.Z_DEFAULT))
    assert flagged == set(rows.tolist()), kind
    if kind == "mirrored":
        assert (eda.geometry_reasons(pts)[rows] == "left/right swapped").all()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["shifted", "shrunk", "swapped"])
def test_plausible_shapes_in_the_wrong_place_pass_the_shape_stage(shapes, kind):
    """These are faces a shape model can't fault: the image stage exists for them."""
    rows = np.arange(5, 400, 40)
    pts = _planted(shapes, kind, rows)
    assert (eda.robust_z(eda.shape_scores(pts))[rows] < eda.Z_DEFAULT).all()


@pytest.mark.parametrize("kind, reason", [("shifted", "label shifted off the face"),
                                          ("shrunk", "label scale differs from the face"),
                                          ("swapped", "label shifted off the face")])
def test_image_stage_scores_catch_the_wrong_place(shapes, kind, reason):
    """With predictions as good as a trained model's (the truth + 2 % noise), the disagreement
    z-scores single out exactly the planted rows, for the right reason."""
    clean, rows = shapes[0], np.arange(5, 400, 40)
    labels = _planted(shapes, kind, rows)
    size = eda.centroid_size(clean)[:, None, None]
    pred = clean + np.random.default_rng(1).normal(0, 0.02, clean.shape) * size \
        + np.random.default_rng(2).normal(0, 0.01, (len(clean), 1, 2)) * size
    z = {k: eda.robust_z(v) for k, v in eda.disagreement(labels, pred).items()}
    worst = np.maximum(*z.values())
    assert set(np.flatnonzero(worst > eda.Z_DEFAULT)) == set(rows.tolist())
    assert (z[reason][rows] > eda.Z_DEFAULT).all()


def test_outside_fraction_ignores_slightly_outside_points():
    lm = np.zeros((2, 971, 2)) + 50
    lm[0, :100, 1] = 104        # 4 px below a 100 px image: fine
    lm[1, :100, 1] = 160        # far outside
    frac = eda.outside_fraction(lm, np.array([[100, 100], [100, 100]]))
    assert frac[0] == 0 and frac[1] == pytest.approx(100 / 971)


@pytest.mark.slow
def test_cli_shape_stage_and_precision_recall(synth_dir, tmp_path):
    out = tmp_path / "bad.csv"
    r = subprocess.run([sys.executable, "-m", "landmarklib.eda", "--data-dir", str(synth_dir), "--out", str(out),
                        "--no-model"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "annotations flagged" in r.stdout
    df = pd.read_csv(out)
    assert list(df.columns[:3]) == ["file_name", "score", "reason"] and "flagged" in df.columns
    assert df["score"].is_monotonic_decreasing
    planted = pd.read_csv(synth_dir / "train" / "planted_bad.csv")
    pr = eda.precision_recall(df, planted).set_index("kind")
    assert set(pr.index) == {"all"} | set(CORRUPTIONS)
    assert pr.loc["mirrored", "recall"] == 1.0 and pr.loc["scrambled", "recall"] == 1.0
    assert pr.loc["all", "false_flags"] == 0


@pytest.mark.slow
def test_the_gallery_reads_only_the_scored_rows_lines(synth_dir):
    """score_annotations' `line` is the row's line in landmarks.csv; labelled_images reads exactly
    those labels back (in the order given) without parsing the rest of the file."""
    df = eda.score_annotations(synth_dir, use_model=False, progress=False)
    names, lm = read_landmarks(synth_dir / "train" / "landmarks.csv")
    assert (names[df["line"] - 2] == df["file_name"]).all()
    pick = df.iloc[[5, 0, 17]]
    paths, points = eda.labelled_images(synth_dir, pick)
    assert [p.name for p in paths] == list(pick["file_name"]) and all(p.is_file() for p in paths)
    np.testing.assert_array_equal(np.stack(points), lm[pick["line"].to_numpy() - 2])


def test_the_threshold_follows_the_clean_tail_and_ignores_the_bad_rows():
    rng = np.random.default_rng(3)
    clean = rng.exponential(1.0, 20_000)                   # a clean stage's scores: an exponential tail
    t = eda.tail_threshold(clean)
    assert 9 < t < 12                                     # q95 (3.0) + ln(20,000 x 0.05 / 0.5) (7.6)
    assert (clean > t).sum() <= 3                         # about EXPECTED_FALSE (0.5) clean rows above it
    assert eda.tail_threshold(2 * clean) == pytest.approx(2 * t, rel=0.02)   # twice the spread: twice as high
    # Bad rows far out take no part in the fit (only their count moves the quantiles' ranks): 1 % of
    # them raises it by about a tenth, 3 % by about a third, and every bad row stays above it.
    for share, rise in ((0.01, 0.15), (0.03, 0.4)):
        with_bad = np.concatenate([clean, np.full(int(share * len(clean)), 1_000.0)])
        assert t < eda.tail_threshold(with_bad) < (1 + rise) * t < 1_000
    assert eda.tail_threshold(clean[:2_000]) < t - 1      # fewer rows, fewer clean extremes to clear
    assert eda.tail_threshold(np.zeros(100)) == eda.MIN_THRESHOLD


@pytest.mark.slow
def test_each_stage_is_flagged_against_its_own_threshold(synth_dir):
    df = eda.score_annotations(synth_dir, use_model=False, progress=False)
    t = df.attrs["thresholds"]
    assert t["implausible shape"] == pytest.approx(eda.tail_threshold(df["z_implausible_shape"].to_numpy()))
    assert t["group geometry"] == t["points far outside the image"] == 1.0   # pass/fail: a failed rule is 100
    z = df[[c for c in df if c.startswith("z_")]].to_numpy() / np.array(list(t.values()))
    np.testing.assert_allclose(df["score"], z.max(1))
    assert (df["flagged"] == (df["score"] > 1)).all() and df["score"].is_monotonic_decreasing
    assert "robust z thresholds: implausible shape" in eda.summary(df)
    fixed = eda.score_annotations(synth_dir, use_model=False, k=5.0, progress=False)
    assert set(fixed.attrs["thresholds"].values()) == {5.0}
    assert (fixed["flagged"] == (fixed[[c for c in fixed if c.startswith("z_")]] > 5).any(axis=1)).all()


@pytest.mark.slow
def test_a_failed_rule_is_captioned_as_failed_not_as_a_measurement(synth_copy):
    """The worst-rows gallery's titles: a failed pass/fail rule has no "times its threshold" (its
    score is a fixed 100); a scored stage says how far past its threshold the row is."""
    csv = synth_copy / "train" / "landmarks.csv"
    table = pd.read_csv(csv, sep="\t")
    xs = [c for c in table.columns if c.endswith("_X")]
    table.loc[3, xs] = (2 * table.loc[3, xs].mean() - table.loc[3, xs]).round().astype(int)   # mirrored, not re-indexed
    table.to_csv(csv, sep="\t", index=False)
    df = eda.score_annotations(synth_copy, use_model=False, progress=False)
    rules, scored = df[df["rule"]], df[~df["rule"] & df["flagged"]]
    assert table.loc[3, "file_name"] in set(rules["file_name"]) and (rules["score"] == eda.GEOMETRY_Z).all()
    for row in rules.itertuples():
        assert eda.caption(row) == f"{row.reason}\nfailed rule"
    assert len(scored) and not df[~df["flagged"]]["rule"].any()
    for row in scored.itertuples():
        assert eda.caption(row) == f"{row.reason}\n{row.score:.1f}× its threshold" and row.score < eda.GEOMETRY_Z


@pytest.mark.parametrize("folds", [0, 1])
def test_eda_needs_two_folds(synth_dir, tmp_path, folds, capsys):
    rc, err = run_cli(eda.main, ["--data-dir", synth_dir, "--out", tmp_path / "b.csv", "--folds", folds, "--epochs", 1,
                              "--crop-size", 32, "--device", "cpu"], capsys)
    assert rc == 2 and f"folds: out-of-fold predictions need at least 2 folds, got {folds}" in err
    assert not (tmp_path / "b.csv").exists()


def test_nan_annotation_scores_are_an_error(synth_dir, monkeypatch):
    monkeypatch.setattr(eda, "shape_scores", lambda lm: np.full(len(lm), np.nan))
    with pytest.raises(DataError, match=r"landmarks.csv:2: annotation score is not a number \(60 row"):
        eda.score_annotations(synth_dir, use_model=False)


def test_eda_shape_stage_grows_by_its_scores_only():
    """The shape stage aligns and scores a chunk at a time: per shape it keeps a score and a
    reason (tens of bytes), not the aligned shape (7.8 kB in complex64, 15.5 kB in float64).
    Slope between 1,000 and 4,000 shapes, so the chunk's own working memory cancels. Before
    chunking the stage held about 50 kB per shape."""
    rng = np.random.default_rng(0)
    base = np.stack([face_points(sample_face(rng)) for _ in range(200)]).astype(np.float32)
    shapes = base[rng.integers(0, 200, 4000)] + rng.normal(0, 0.5, (4000, 971, 2)).astype(np.float32)
    per_shape = (peak_bytes(lambda: _shape_stage(shapes)) - peak_bytes(lambda: _shape_stage(shapes[:1000]))) / 3000
    assert per_shape < 500, per_shape


def test_procrustes_means_hold_their_sample_once_in_complex64():
    """The shape stage's fixed cost: the Procrustes means are estimated on MEAN_SAMPLE (20,000) shapes,
    held once as complex64 (7.8 kB a shape) and rotated in place; the float work goes a chunk at a
    time. Slope between 500 and 2,000 sampled shapes. Before, float64 copies and their squares made it
    about 70 kB a shape: 1.3 GB at 20,000, the shape stage's peak at contest scale."""
    rng = np.random.default_rng(0)
    shapes = rng.integers(0, 400, (3000, 971, 2)).astype(np.int16)
    per_shape = (peak_bytes(lambda: eda.procrustes_means(shapes, sample=2000, chunk=250))
                 - peak_bytes(lambda: eda.procrustes_means(shapes, sample=500, chunk=250))) / 1500
    assert per_shape < 9000, per_shape
