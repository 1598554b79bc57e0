"""loader.py: each epoch's order and the batches BatchLoader reads."""
import numpy as np
import pytest

from landmarklib.cache import build_cache
from landmarklib.loader import BatchLoader


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
