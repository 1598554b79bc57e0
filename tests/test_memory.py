"""Memory that grows with the number of images only as much as it must: a guard on the training
setup's per-image cost (issue: contest scale, 393,930 training images in a 12.7 GB Colab runtime)."""
import json
import tracemalloc

import numpy as np

from landmarklib import csvfiles, data, eda
from landmarklib.atomic import write_json
from landmarklib.cache import _save, compact_labels, open_cache
from landmarklib.loader import BatchLoader


def _peak(work) -> int:
    """Peak bytes allocated (numpy's arrays included) while work() runs; what it imports is imported
    before (at the top of this file), so that no module's first import is counted."""
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _fake_cache(root, n, rng):
    """A cache folder of n rows with contest-like integer labels and tiny images (the label path is
    what is measured; images are a memory map either way)."""
    root.mkdir()
    np.lib.format.open_memmap(root / "images.npy", "w+", np.uint8, (n, 8, 8, 3)).flush()
    w = rng.integers(150, 1400, n)
    _save(root / "affine.npy", np.stack([128 / w, 128 / w, np.zeros(n), np.zeros(n)], 1))
    _save(root / "sizes.npy", np.stack([w, w], 1).astype(np.int64))
    _save(root / "done.npy", np.ones(n, bool))
    _save(root / "landmarks.npy", compact_labels(rng.integers(-22, 1308, (n, 971, 2)).astype(np.float32)))
    write_json(root / "names.json", [f"{i:032x}.jpg" for i in range(n)])
    (root / "manifest.json").write_text(json.dumps({"size": 128, "mode": "crop"}))
    return root


def _setup(path) -> None:
    """What train_model does with the labels: open the cache, take the targets, the head's mean
    shape over the train split, and a few batches."""
    cache = open_cache(path)
    targets = cache.targets()
    train_idx = np.arange(int(len(cache) * 0.8))
    targets.mean(train_idx, chunk=256)
    for _, (_, t, _) in zip(range(3), BatchLoader(cache.images, targets, train_idx, 64, shuffle=True)):
        assert t.shape == (64, 971, 2)


def test_training_setup_grows_by_its_index_arrays_only(tmp_path):
    """Per image, the setup may hold its affine (32 bytes), size (16), name (128 as numpy text, more
    while names.json is parsed) and done flag, and nothing more: the labels (971 x 2 int16) are
    paged in from landmarks.npy, a batch at a time, and no float copy of them is made (7.8 kB each
    in float32, 15.5 kB in float64). Measured as the slope between 1,000 and 4,000 images, so
    constant costs (a chunk, a batch) cancel. Before per-batch encoding, Cache.targets() made this
    about 50 kB per image; with the labels read into memory it was 3.9 kB."""
    rng = np.random.default_rng(0)
    small, large = (_peak(lambda: _setup(path)) for path in [_fake_cache(tmp_path / "small", 1000, rng),
                                                             _fake_cache(tmp_path / "large", 4000, rng)])
    per_image = (large - small) / 3000
    assert per_image < 1000, per_image


def _shape_stage(landmarks) -> None:
    eda.shape_scores(landmarks, fit_max=300, chunk=250, mean_sample=250)
    eda.geometry_reasons(landmarks, chunk=250)


def test_eda_shape_stage_grows_by_its_scores_only():
    """The shape stage aligns and scores a chunk at a time: per shape it keeps a score and a
    reason (tens of bytes), not the aligned shape (7.8 kB in complex64, 15.5 kB in float64).
    Slope between 1,000 and 4,000 shapes, so the chunk's own working memory cancels. Before
    chunking the stage held about 50 kB per shape."""
    from landmarklib.synth import face_points, sample_face
    rng = np.random.default_rng(0)
    base = np.stack([face_points(sample_face(rng)) for _ in range(200)]).astype(np.float32)
    shapes = base[rng.integers(0, 200, 4000)] + rng.normal(0, 0.5, (4000, 971, 2)).astype(np.float32)
    per_shape = (_peak(lambda: _shape_stage(shapes)) - _peak(lambda: _shape_stage(shapes[:1000]))) / 3000
    assert per_shape < 500, per_shape


def _write_csv(path, n, rng, last=None):
    from landmarklib.csvfiles import LANDMARK_COLUMNS
    block = rng.integers(-22, 1308, (100, 1942))
    with open(path, "w") as f:
        f.write("\t".join(LANDMARK_COLUMNS) + "\n")
        for i in range(n):
            values = block[i % 100].tolist() if last is None or i < n - 1 else [last] * 1942
            f.write(f"{i:032x}.jpg\t" + "\t".join(map(str, values)) + "\n")
    return path


def test_parsing_landmarks_csv_costs_int16_per_row(monkeypatch):
    """The parse keeps int16 labels (3,884 bytes a row) and a name; float32 would be 7,768. Slope
    between 1,000 and 4,000 rows, parsed 500 rows at a time so that the parser's chunk (about 25 kB a
    row of it) cancels (issue 22: the cache and EDA stages peaked at 4.95 / 4.98 GiB at full size
    with float32)."""
    import tempfile
    from pathlib import Path
    monkeypatch.setattr(csvfiles, "CHUNK_ROWS", 500)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        paths = [_write_csv(Path(d) / "small.csv", 1000, rng), _write_csv(Path(d) / "large.csv", 4000, rng)]
        small, large = (_peak(lambda: csvfiles.read_landmarks(path)) for path in paths)
    per_row = (large - small) / 3000
    assert per_row < 5000, per_row      # float32 labels: 7,768 bytes a row and more


def test_labels_that_are_not_whole_numbers_fall_back_to_float32_exactly(tmp_path, capsys):
    from landmarklib.csvfiles import read_landmarks
    rng = np.random.default_rng(1)
    _, lm = read_landmarks(_write_csv(tmp_path / "a.csv", 30, rng))
    assert lm.dtype == np.int16
    _, lm2 = read_landmarks(_write_csv(tmp_path / "b.csv", 30, np.random.default_rng(1), last=12.5))
    assert lm2.dtype == np.float32 and (lm2[-1] == 12.5).all()
    np.testing.assert_array_equal(lm2[:-1], lm[:-1])
    assert "a.csv" not in capsys.readouterr().out
    _, lm3 = read_landmarks(_write_csv(tmp_path / "c.csv", 30, np.random.default_rng(1), last=40000))
    assert lm3.dtype == np.float32 and (lm3[-1] == 40000).all()
    assert "c.csv:2: labels that are not whole numbers from here on" in capsys.readouterr().out


def test_procrustes_means_hold_their_sample_once_in_complex64():
    """The shape stage's fixed cost: the Procrustes means are estimated on MEAN_SAMPLE (20,000) shapes,
    held once as complex64 (7.8 kB a shape) and rotated in place; the float work goes a chunk at a
    time. Slope between 500 and 2,000 sampled shapes. Before, float64 copies and their squares made it
    about 70 kB a shape: 1.3 GB at 20,000, the shape stage's peak at contest scale."""
    rng = np.random.default_rng(0)
    shapes = rng.integers(0, 400, (3000, 971, 2)).astype(np.int16)
    per_shape = (_peak(lambda: eda.procrustes_means(shapes, sample=2000, chunk=250))
                 - _peak(lambda: eda.procrustes_means(shapes, sample=500, chunk=250))) / 1500
    assert per_shape < 9000, per_shape
