import os

import numpy as np
import pytest
from PIL import Image

import landmarklib.cache as cache_mod
from landmarklib.cache import build_cache
from landmarklib.loader import BatchLoader
from landmarklib.errors import DataError
from landmarklib.data import load_split
from landmarklib.images import image_sizes
from landmarklib.geometry import encode, fit_affine, warp_image


def check_sizes(data_dir):
    split = load_split(data_dir, "train")
    return image_sizes([str(split.image_path(i)) for i in range(len(split.names))], workers=1)


def _count_decodes(monkeypatch):
    calls = []
    real = cache_mod._decode

    def spy(out, src, todo, *a, **k):
        calls.append(len(todo))
        return real(out, src, todo, *a, **k)
    monkeypatch.setattr(cache_mod, "_decode", spy)
    return calls


def _count_state_saves(monkeypatch):
    saves = []
    real = cache_mod._save

    def spy(path, arr):
        saves.append(path.name)
        return real(path, arr)
    monkeypatch.setattr(cache_mod, "_save", spy)
    return saves


@pytest.mark.parametrize("progress", [False, True])
def test_build_state_is_saved_by_time_not_per_chunk(synth_dir, tmp_path, monkeypatch, progress):
    """Each save rewrites every row's state (19 MB at contest scale): saved every SAVE_SECONDS and at
    the end, with or without a progress bar. (The cadence once followed the bar's counter, which a
    disabled bar never advances: a save after every 64 images, quadratic in the rows.)"""
    monkeypatch.setattr(cache_mod, "DECODE_CHUNK", 8)       # 60 images: 8 chunks
    saves = _count_state_saves(monkeypatch)
    build_cache(synth_dir, "train", tmp_path / "a", crop_size=16, workers=1, progress=progress)
    assert saves.count("done.npy") == 2                      # allocated, then at the end
    monkeypatch.setattr(cache_mod, "SAVE_SECONDS", 0.0)
    saves.clear()
    build_cache(synth_dir, "train", tmp_path / "b", crop_size=16, workers=1, progress=progress)
    assert saves.count("done.npy") == 2 + 8                  # and after each of the 8 chunks


def test_build_matches_direct_decode(synth_dir, tmp_path):
    c = build_cache(synth_dir, "train", tmp_path, crop_size=48, mode="pad", workers=1, progress=False)
    assert c.images.shape == (60, 48, 48, 3) and c.images.dtype == np.uint8
    i = 7
    with Image.open(synth_dir / "train" / "images" / c.names[i]) as im:
        size = im.size
        a = fit_affine(*size, 48, "pad")
        np.testing.assert_array_equal(c.images[i], warp_image(im, a, 48, "pad"))
    assert tuple(c.sizes[i]) == size and im.size != size    # the original size, not the JPEG draft's
    assert (c.sizes == check_sizes(synth_dir)).all()
    np.testing.assert_allclose(c.affine[i], a)
    np.testing.assert_allclose(c.targets()[i], encode(c.landmarks[i], a, 48), atol=1e-5)


def test_reuse_rebuild_and_resume(synth_copy, tmp_path, monkeypatch):
    calls = _count_decodes(monkeypatch)
    first = build_cache(synth_copy, "train", tmp_path, crop_size=32, workers=2, progress=False)
    reference = np.array(first.images)
    build_cache(synth_copy, "train", tmp_path, crop_size=32, workers=2, progress=False)
    assert calls == [60]                                   # unchanged inputs: nothing decoded again
    build_cache(synth_copy, "train", tmp_path, crop_size=40, workers=1, progress=False)
    assert calls == [60, 60]                               # another size is another cache
    # An interrupted build (rows 10.. not done) resumes with just those rows.
    path = first.path
    done = np.load(path / "done.npy")
    done[10:] = False
    np.save(path / "done.npy", done)
    images = np.load(path / "images.npy", mmap_mode="r+")
    images[10:] = 0
    images.flush()
    with pytest.raises(DataError, match="incomplete"):
        cache_mod.open_cache(path)
    resumed = build_cache(synth_copy, "train", tmp_path, crop_size=32, workers=1, progress=False)
    assert calls[-1] == 50
    np.testing.assert_array_equal(resumed.images, reference)
    # A changed source image rebuilds everything.
    img = synth_copy / "train" / "images" / first.names[3]
    Image.open(img).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(img, "JPEG")
    os.utime(img, ns=(1, 1))
    rebuilt = build_cache(synth_copy, "train", tmp_path, crop_size=32, workers=1, progress=False)
    assert calls[-1] == 60
    assert not np.array_equal(rebuilt.images[3], reference[3])


def test_corrupt_image_in_build_is_named(synth_copy, tmp_path):
    victim = sorted((synth_copy / "train" / "images").iterdir())[4]
    victim.write_bytes(victim.read_bytes()[:200])          # truncated JPEG
    with pytest.raises(DataError, match=victim.name):
        build_cache(synth_copy, "train", tmp_path, crop_size=32, workers=1, progress=False)


def test_loader_covers_each_index_once_and_splits_ranks(synth_dir, tmp_path):
    c = build_cache(synth_dir, "train", tmp_path, crop_size=32, workers=1, progress=False)
    t = c.targets()
    idx = np.arange(5, 55)
    loader = BatchLoader(c.images, t, idx, batch_size=8, shuffle=True, seed=3)
    seen = [rows.numpy() for _, _, rows in loader]
    assert sorted(np.concatenate(seen).tolist()) == idx.tolist() and len(seen) == len(loader) == 7
    imgs, tg, rows = next(iter(loader))
    assert imgs.shape == (8, 32, 32, 3) and imgs.dtype.is_floating_point is False
    np.testing.assert_array_equal(tg.numpy(), t[rows.numpy()])
    loader.set_epoch(1)
    assert not np.array_equal(np.concatenate([r.numpy() for *_, r in loader]), np.concatenate(seen))
    ranks = [BatchLoader(c.images, t, idx, 8, True, seed=3, rank=r, world_size=2) for r in range(2)]
    for (a, b, full) in zip(*[list(x) for x in ranks], seen):
        assert sorted(np.concatenate([a[2].numpy(), b[2].numpy()]).tolist()) == sorted(full.tolist())


def test_a_built_unchanged_cache_opens_without_parsing_the_csv(synth_copy, tmp_path, monkeypatch):
    """At contest scale parsing landmarks.csv is a minute and 3 GB: a finished cache whose sources
    are unchanged is opened from its own files; a changed CSV still goes the slow way and is seen."""
    built = build_cache(synth_copy, "train", tmp_path, crop_size=32, workers=1, progress=False)
    parsed = []
    real = cache_mod.load_split
    monkeypatch.setattr(cache_mod, "load_split", lambda *a: parsed.append(a) or real(*a))
    again = build_cache(synth_copy, "train", tmp_path, crop_size=32, workers=1, progress=False)
    assert parsed == [] and list(again.names) == list(built.names)
    np.testing.assert_array_equal(again.landmarks, built.landmarks)
    csv = synth_copy / "train" / "landmarks.csv"
    lines = csv.read_text().splitlines(keepends=True)
    first = lines[1].split("\t")
    csv.write_text(lines[0] + "\t".join(first[:1] + [str(int(first[1]) + 3)] + first[2:]) + "".join(lines[2:]))
    changed = build_cache(synth_copy, "train", tmp_path, crop_size=32, workers=1, progress=False)
    assert len(parsed) == 1 and changed.landmarks[0, 0, 0] == built.landmarks[0, 0, 0] + 3


def test_block_order_reads_windows_of_long_runs_and_still_mixes_each_batch():
    """An epoch in block order visits every row once; each window is at most WINDOW_BLOCKS runs of
    consecutive rows (long reads from a cache larger than RAM), and a batch drawn from a window mixes
    rows from many places in the file. Random order: a permutation, as before."""
    from landmarklib.loader import WINDOW_BLOCKS, epoch_order
    idx = np.setdiff1d(np.arange(5000), np.arange(100, 5000, 37))     # a blocklist's gaps
    order, starts = epoch_order(idx, np.random.default_rng(0), "blocks", row_bytes=(4 << 20) // 50)  # 50 rows a block
    assert sorted(order.tolist()) == idx.tolist()
    ends = list(starts[1:]) + [len(order)]
    for s, e in zip(starts, ends):
        rows = np.sort(order[s:e])
        runs = 1 + int((np.diff(np.searchsorted(idx, rows)) > 1).sum())   # runs of consecutive kept rows
        assert runs <= WINDOW_BLOCKS and e - s <= 50 * WINDOW_BLOCKS
    first = np.searchsorted(idx, order[:64]) // 50                     # the blocks of a batch's rows
    assert len(np.unique(first)) >= 10
    again, _ = epoch_order(idx, np.random.default_rng(0), "blocks", row_bytes=(4 << 20) // 50)
    np.testing.assert_array_equal(order, again)
    rand, none = epoch_order(idx, np.random.default_rng(0), "random")
    assert none is None and sorted(rand.tolist()) == idx.tolist()
    with pytest.raises(ValueError, match="batch_order: unknown order 'sorted'"):
        epoch_order(idx, np.random.default_rng(0), "sorted")


@pytest.mark.parametrize("order", ["blocks", "random"])
def test_each_order_yields_the_rows_it_names(synth_dir, tmp_path, order, monkeypatch):
    """Batches in either order hold the images and labels of the rows they name, every row once."""
    import landmarklib.loader as loader_mod
    monkeypatch.setattr(loader_mod, "BLOCK_BYTES", 3 * (32 * 32 * 3 + 971 * 4))   # 3 rows a block: many windows
    c = build_cache(synth_dir, "train", tmp_path, crop_size=32, workers=1, progress=False)
    t = c.targets()
    idx = np.arange(2, 58)
    loader = BatchLoader(c.images, t, idx, batch_size=7, shuffle=True, seed=1, order=order)
    seen = []
    for imgs, tg, rows in loader:
        r = rows.numpy()
        np.testing.assert_array_equal(imgs.numpy(), c.images[r])
        np.testing.assert_allclose(tg.numpy(), t[r], rtol=0, atol=1e-6)
        seen.append(r)
    assert sorted(np.concatenate(seen).tolist()) == idx.tolist()
