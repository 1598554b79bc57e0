"""Batches straight from the decode cache (cache.py) to the device: each epoch's order, and a loader
that gathers the next batches in a background thread while the GPU works on the current one."""
from __future__ import annotations

import mmap
import queue
import threading

import numpy as np
import torch

from .cache import Targets
from .geometry import encode


ORDERS = ("random", "blocks")   # how a shuffled epoch reads the cache (BatchLoader's order)
BLOCK_BYTES = 4 << 20   # "blocks": a run of consecutive rows read at once (85 rows at 128 px)
WINDOW_BLOCKS = 16      # "blocks": rows are shuffled within a window of this many random blocks (64 MiB at 128 px)


def epoch_order(indices: np.ndarray, rng: np.random.Generator, order: str = "random",
                row_bytes: int = 128 * 128 * 3 + 971 * 2 * 2) -> tuple[np.ndarray, np.ndarray | None]:
    """One shuffled epoch of `indices`: (the order, the start position of each window or None).

    random (the default): a permutation; from a cache larger than RAM (the 2020 train cache is 19.4 GB
    at 128 px, a free Colab runtime has 12.7 GB) every row is a random read, which the loader asks
    for a few batches ahead so that the disk serves many at once. blocks: the rows cut into runs of
    consecutive rows (BLOCK_BYTES each), the runs shuffled, then taken WINDOW_BLOCKS at a time and the
    rows of each window shuffled: the loader reads a window in long runs. Faster from a slow disk,
    but the same neighbours meet in the same few batches every epoch, which cost accuracy on the demo
    set (README; bench/bench_feed.py measures the feed of both)."""
    if order == "random":
        return indices[rng.permutation(len(indices))], None
    if order != "blocks":
        raise ValueError(f"batch_order: unknown order {order!r}; choose one of {', '.join(ORDERS)}")
    rows = np.sort(indices)
    per_block = max(1, BLOCK_BYTES // max(1, row_bytes))
    blocks = np.array_split(rows, range(per_block, len(rows), per_block))
    shuffled = rng.permutation(len(blocks))
    windows = [np.concatenate([blocks[b] for b in shuffled[w:w + WINDOW_BLOCKS]])
               for w in range(0, len(blocks), WINDOW_BLOCKS)]
    starts = np.cumsum([0] + [len(w) for w in windows[:-1]])
    return np.concatenate([w[rng.permutation(len(w))] for w in windows]), starts


class BatchLoader:
    """Batches straight from the cache: uint8 NHWC images and float32 targets, on `device`. Targets
    are encoded per batch on the device from the cache's compact labels (Cache.targets()).

    A background thread gathers the next batches (a memcpy out of the memmap, pinned on
    CUDA) while the GPU works on the current one; the host->device copy is non-blocking.
    From a memmapped cache the kernel is asked to read the next batches' rows ahead (madvise), so a
    cache larger than RAM is read many rows at a time (order="blocks": whole windows of long runs;
    see epoch_order). Under DistributedDataParallel every rank walks the same shuffled order and takes its
    own slice of each global batch, so N ranks see exactly what one process would.
    """

    def __init__(self, images: np.ndarray, targets: Targets | None, indices: np.ndarray, batch_size: int,
                 shuffle: bool, seed: int = 0, device: str | torch.device = "cpu", drop_last: bool = False,
                 rank: int = 0, world_size: int = 1, prefetch: int = 3, order: str = "random"):
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by the {world_size} processes")
        self.images, self.targets = images, targets
        self.indices = np.asarray(indices)
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.device = torch.device(device)
        self.rank, self.world_size, self.prefetch, self.order = rank, world_size, prefetch, order
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _read_ahead(self, rows: np.ndarray) -> None:
        """Ask the kernel to read `rows` (sorted) of the memmapped images and labels now, run by run, in
        the background (madvise WILLNEED): from a cache larger than RAM, the next batches' rows are read
        many at a time instead of one page fault after another. Arrays in memory need nothing."""
        maps = [(arr, arr._mmap) for arr in (self.images, self.targets.landmarks if self.targets is not None else None)
                if hasattr(getattr(arr, "_mmap", None), "madvise")]   # np.load(..., mmap_mode=...)'s memory maps
        if not maps or not len(rows):
            return
        runs = np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1)
        for arr, mm in maps:
            row = arr[:1].nbytes
            for run in runs:
                start = arr.offset + int(run[0]) * row
                aligned = start - start % mmap.PAGESIZE
                mm.madvise(mmap.MADV_WILLNEED, aligned, start + len(run) * row - aligned)

    def _batches(self):
        order, starts = self.indices, None
        if self.shuffle:
            row_bytes = self.images[:1].nbytes + (self.targets.landmarks[:1].nbytes if self.targets is not None else 0)
            order, starts = epoch_order(self.indices, np.random.default_rng([self.seed, self.epoch]), self.order,
                                        row_bytes)
        # Each batch's rows (this rank's slice), sorted: memmap reads in file order.
        batches = [np.sort(order[b * self.batch_size:(b + 1) * self.batch_size][self.rank::self.world_size])
                   for b in range(len(self))]
        advised = -1   # the last batch (random order) or window (block order) asked for ahead
        for b, sorted_rows in enumerate(batches):
            if starts is None:   # the next `prefetch` batches' rows: the kernel reads them in parallel
                for a in range(max(advised + 1, b), min(b + 1 + self.prefetch, len(batches))):
                    self._read_ahead(batches[a])
                    advised = a
            else:                # the windows this batch lies in and the next, whole
                first, last = (int(np.searchsorted(starts, p, side="right")) - 1
                               for p in (b * self.batch_size, min((b + 1) * self.batch_size, len(order)) - 1))
                for w in range(max(advised + 1, first), min(last + 2, len(starts))):
                    end = starts[w + 1] if w + 1 < len(starts) else len(order)
                    self._read_ahead(np.sort(order[starts[w]:end]))
                    advised = w
            imgs = torch.from_numpy(self.images[sorted_rows])
            tg = None
            if self.targets is not None:   # labels + affines; encoded on the device in __iter__
                tg = (torch.from_numpy(self.targets.landmarks[sorted_rows]),
                      torch.from_numpy(self.targets.affine[sorted_rows]))
            if self.device.type == "cuda":
                imgs = imgs.pin_memory()
                tg = tuple(t.pin_memory() for t in tg) if tg is not None else None
            yield imgs, tg, torch.from_numpy(sorted_rows)

    def __iter__(self):
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def produce() -> None:
            try:
                for item in self._batches():
                    if stop.is_set():
                        return
                    q.put(item)
            except BaseException as e:  # surface loader errors in the training loop
                q.put(e)
                return
            q.put(None)

        t = threading.Thread(target=produce, daemon=True)
        t.start()
        try:
            while (item := q.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                imgs, tg, rows = item
                if tg is not None:
                    landmarks, affine = (t.to(self.device, non_blocking=True) for t in tg)
                    tg = encode(landmarks, affine, self.targets.crop_size).float()
                yield imgs.to(self.device, non_blocking=True), tg, rows
        finally:
            stop.set()
            while t.is_alive():  # drain so the producer can exit
                try:
                    q.get_nowait()
                except queue.Empty:
                    t.join(0.01)
