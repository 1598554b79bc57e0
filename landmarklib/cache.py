"""Decode cache: every image decoded once into uint8 arrays at the working size.

    cache = build_cache(data_dir, "train", cache_root(data_dir), crop_size=128, mode="crop")

A cache folder holds images.npy (N, S, S, 3) uint8 (read back as a memmap), affine.npy
(N, 4) per-image (sx, sy, ox, oy) from original to input pixels, sizes.npy (N, 2) original
width/height, landmarks.npy (N, 971, 2) original pixels where known, names.json, done.npy
(which rows are decoded) and manifest.json (what it was built from: the CSV's SHA-256,
every image's size and mtime, the parameters). A rerun with the same inputs reuses it; an
interrupted build resumes; a changed parameter, CSV or image rebuilds; a damaged file is
found (each file's shape and type are checked) and rewritten. One process builds a cache at a
time (a lock beside it); another waits, then finds it built.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .atomic import atomic_path, check_free_space, file_lock, write_json
from .csvfiles import is_int16
from .data import SPLIT_CSV, Split, check, check_images_exist, file_digest, is_synthetic, label_ranges, load_split
from .errors import DataError, os_error
from .geometry import encode, fit_affine, warp_image
from .images import open_image
from .layout import N_POINTS
from .progress import bar
from .workers import process_pool

CACHE_VERSION = 2   # 2: keyed on the CSV's content; images read upright (EXIF orientation)


def cache_root(data_dir: Path | str, cache_dir: Path | str | None = None) -> Path:
    """Where caches live: cache_dir when given, else <data_dir>/cache (keep it on local disk, not Drive)."""
    return Path(cache_dir) if cache_dir else Path(data_dir) / "cache"


def split_cache_dir(root: Path | str, split: str, crop_size: int, mode: str) -> Path:
    """Where build_cache puts one split's cache at one size and resize mode."""
    return Path(root) / f"{split}_{crop_size}_{mode}"


def _fingerprint(csv: Path, image_dir: Path, names) -> str:
    """What a cache is built from: the CSV's content (its SHA-256: an edit that keeps its length and
    mtime still counts) and every image's (name, size, mtime). Images are not hashed: 19 GB at
    contest scale would take minutes on every run, and an image edited in place keeps neither."""
    h = hashlib.sha1(f"{csv.name}\0{file_digest(csv)}\n".encode())
    for p in (image_dir / n for n in names):
        st = p.stat()
        h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _built_and_unchanged(out: Path, data_dir: Path, split: str, manifest: dict) -> Cache | None:
    """The finished cache at `out` when its sources are as recorded (the CSV's content, every image's
    size and mtime, listed by the cache's own names.json), without parsing the CSV: at contest scale
    that parse is a minute and 3 GB. None when anything differs or is unreadable (the slow path decides)."""
    try:
        saved = json.loads((out / "manifest.json").read_text())
        names = json.loads((out / "names.json").read_text())
        csv = data_dir / split / SPLIT_CSV[split]
        if {k: saved.get(k) for k in manifest} != manifest or saved.get("count") != len(names) or \
                saved.get("source") != _fingerprint(csv, data_dir / split / "images", names):
            return None
        done = _resumable(out, saved)
        if done is None or not done.all() or (split == "train" and not _labels_whole(out, len(names))):
            return None
        return open_cache(out)
    except (OSError, ValueError, EOFError, KeyError, TypeError, DataError):
        return None


@dataclass
class Cache:
    """A built cache, memory-mapped."""
    path: Path
    names: np.ndarray
    images: np.ndarray            # (N, S, S, 3) uint8 memmap
    affine: np.ndarray            # (N, 4)
    sizes: np.ndarray             # (N, 2)
    landmarks: np.ndarray | None  # (N, 971, 2) original pixels
    crop_size: int
    mode: str
    synthetic: bool = False       # made from the synthetic demo set

    def __len__(self) -> int:
        return len(self.names)

    def targets(self) -> Targets:
        """The training targets, encoded per batch from the compact labels (no N x 971 x 2 float copy)."""
        return Targets(self.landmarks, self.affine, self.crop_size)


@dataclass
class Targets:
    """Normalized targets ([-1, 1] over the input square) of a cache's rows, made on demand from its
    labels (original pixels, int16 where exact) and per-image affines: `targets[rows]` is float32."""
    landmarks: np.ndarray
    affine: np.ndarray
    crop_size: int

    def __getitem__(self, rows) -> np.ndarray:
        return encode(self.landmarks[rows], self.affine[rows], self.crop_size).astype(np.float32)

    def __len__(self) -> int:
        return len(self.landmarks)

    def mean(self, rows: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """Mean target over `rows` (the head's starting shape), in float64, chunk by chunk."""
        total = np.zeros(self.landmarks.shape[1:], np.float64)
        for i in range(0, len(rows), chunk):
            r = rows[i:i + chunk]
            total += encode(self.landmarks[r], self.affine[r], self.crop_size).sum(0)
        return (total / max(1, len(rows))).astype(np.float32)


_worker: dict = {}


def _init_worker(images_path: str) -> None:
    _worker["images"] = np.load(images_path, mmap_mode="r+")


def _decode_chunk(args: tuple) -> list[tuple[int, np.ndarray]]:
    rows, paths, crop_size, mode = args
    out = []
    for i, p in zip(rows, paths):
        try:
            with open_image(p) as im:     # upright, 8-bit (a 16-bit PNG is refused, not clipped to white)
                size = im.size            # before warp_image: its JPEG draft shrinks im.size
                a = fit_affine(size[0], size[1], crop_size, mode)
                _worker["images"][i] = warp_image(im, a, crop_size, mode)
                out.append((i, a, size))
        except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
            raise DataError(f"{p}: corrupt or unreadable image: {e}") from None
    return out


def build_cache(data_dir: Path | str, split: str, root: Path | str, crop_size: int = 128, mode: str = "crop",
                workers: int | None = None, progress: bool = True, src: Split | None = None) -> Cache:
    """Decode `split` once into root/<split>_<crop_size>_<mode>/ (reused when unchanged, resumed
    when interrupted, rebuilt with one line saying why when unreadable). `src`: the split already
    parsed (load_split), so that a caller that parsed it does not parse it again."""
    fit_affine(100, 100, crop_size, mode)  # validates mode early
    out = split_cache_dir(root, split, crop_size, mode)
    manifest = {"version": CACHE_VERSION, "split": split, "size": crop_size, "mode": mode,
                "synthetic": is_synthetic(data_dir)}
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise os_error(e, out.parent) from None
    with _build_lock(out, progress):
        if (out / "manifest.json").exists() and (cache := _built_and_unchanged(out, Path(data_dir), split, manifest)):
            return cache
        return _build(out, data_dir, split, manifest, crop_size, mode, workers, progress, src)


def _build_lock(out: Path, progress: bool):
    """One builder per cache: a lock on <out>.lock (beside the folder, which a rebuild empties). A
    second process (another notebook, a second run) waits for the first, then finds the cache built.
    Two Colab tabs are two machines: each has its own local cache."""
    def wait(owner: str) -> None:
        if progress:
            print(f"cache {out}: another process is building it; waiting for it to finish", flush=True)
    return file_lock(out.with_name(out.name + ".lock"), wait)


def _build(out: Path, data_dir: Path | str, split: str, manifest: dict, crop_size: int, mode: str,
           workers: int | None, progress: bool, src: Split | None) -> Cache:
    """build_cache's slow path, under the lock: parse, then resume, repair or start over."""
    src = src if src is not None else load_split(data_dir, split)
    check_images_exist(src)
    n = len(src.names)
    manifest |= {"count": n, "source": _fingerprint(src.csv, src.image_dir, src.names),
                 "csv_sha256": file_digest(src.csv)}
    done = None
    if (out / "manifest.json").exists():
        try:
            done = _resumable(out, manifest)
        except (OSError, ValueError, EOFError, DataError) as e:   # a killed or broken build: start over
            print(f"cache {out}: {e}; rebuilding it")
    if done is None:  # new, changed or unreadable: start over
        try:
            out.mkdir(parents=True, exist_ok=True)
            for f in out.iterdir():
                f.unlink()
            _allocate(out / "images.npy", (n, crop_size, crop_size, 3))
            for name, arr in [("affine", np.zeros((n, 4))), ("sizes", np.zeros((n, 2), np.int64)),
                              ("done", np.zeros(n, bool))]:
                _save(out / f"{name}.npy", arr)
            write_json(out / "names.json", src.names.tolist())   # JSON: any file name round-trips
            write_json(out / "manifest.json", manifest)          # last: the cache exists from here on
        except OSError as e:
            raise os_error(e, out) from None
        done = np.zeros(n, bool)
    todo = np.flatnonzero(~done)
    if len(todo):
        _decode(out, src, todo, crop_size, mode, workers, progress)
    if src.landmarks is not None and not _labels_whole(out, n):
        label_ranges(src, np.load(out / "sizes.npy"))   # labels that cannot be on their (decoded) image: refused
        _save(out / "landmarks.npy", compact_labels(src.landmarks))
    return open_cache(out)


def _labels_whole(out: Path, n: int) -> bool:
    """Whether out/landmarks.npy is there and whole: (n, 971, 2), int16 or float32, readable to its
    end. A damaged one is removed (said in one line), so the build writes it again."""
    path = out / "landmarks.npy"
    if not path.is_file():
        return False
    try:
        lm = np.load(path, mmap_mode="r")
        if lm.shape == (n, N_POINTS, 2) and lm.dtype in (np.int16, np.float32):
            return True
        problem = f"holds {lm.dtype} {lm.shape}, expected ({n}, {N_POINTS}, 2) int16 or float32"
    except (OSError, ValueError, EOFError) as e:
        problem = f"unreadable ({e})"
    print(f"cache {path}: {problem}; writing it again")
    path.unlink()
    return False


def check_and_build(data_dir: Path | str, root: Path | str, crop_size: int = 128, mode: str = "crop",
                    workers: int | None = None, progress: bool = True) -> tuple[dict, dict[str, Cache]]:
    """The data stage: the layout checked (data.check) and both splits cached, each CSV parsed once
    (check and cache share the parse). Returns (check's report, split -> Cache)."""
    splits = (load_split(data_dir, "train"), load_split(data_dir, "test"))
    report = check(data_dir, workers, splits)
    return report, {s.name: build_cache(data_dir, s.name, root, crop_size, mode, workers, progress, src=s)
                    for s in splits}


def compact_labels(landmarks: np.ndarray, chunk: int = 20_000) -> np.ndarray:
    """int16 when every label is a whole number that fits (data.is_int16), half the memory of float32
    and exact; float32 otherwise. Labels read_landmarks parsed to int16 already are returned as they are;
    others are checked a chunk at a time: no full-size temporaries."""
    lm = np.asarray(landmarks)
    if lm.dtype == np.int16 or not lm.size:
        return lm if lm.size else lm.astype(np.float32)
    out = np.empty(lm.shape, np.int16)
    for i in range(0, len(lm), chunk):
        part = lm[i:i + chunk]
        if not is_int16(part):
            return lm.astype(np.float32)
        out[i:i + chunk] = part
    return out


def _save(path: Path, arr: np.ndarray) -> None:
    """np.save through a temp file (a kill or a full disk leaves the previous file whole)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr)


def _allocate(path: Path, shape: tuple) -> None:
    """The image array's file at full size, its blocks reserved now: a disk too small fails here with
    'needed, free, where', not with a bus error when a page of the memory map is first written."""
    check_free_space(path.parent, int(np.prod(shape)), "the cache", "give another cache_dir")
    np.lib.format.open_memmap(path, "w+", np.uint8, shape).flush()
    if hasattr(os, "posix_fallocate"):
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)


def _resumable(out: Path, manifest: dict) -> np.ndarray | None:
    """The done mask of a cache built (or half built) from the same inputs; None when they changed.
    A missing, truncated or unreadable file raises (the caller rebuilds)."""
    if json.loads((out / "manifest.json").read_text()) != manifest:
        return None
    n, s = manifest["count"], manifest["size"]
    done = np.load(out / "done.npy")
    images = np.load(out / "images.npy", mmap_mode="r")
    shapes = {"done.npy": (done.shape, (n,)), "images.npy": (images.shape, (n, s, s, 3)),
              "affine.npy": (np.load(out / "affine.npy").shape, (n, 4)),
              "sizes.npy": (np.load(out / "sizes.npy").shape, (n, 2))}
    for name, (got, want) in shapes.items():
        if got != want:
            raise DataError(f"{name} has shape {got}, expected {want}")
    if len(json.loads((out / "names.json").read_text())) != n:
        raise DataError(f"names.json does not list {n} names")
    return done


DECODE_CHUNK = 64      # images a worker decodes per task
# The build's state (every row's affine, size and done flag: 19 MB at contest scale) is saved this often,
# and when the build ends or fails: a killed build loses at most these seconds. Saving per chunk instead
# was quadratic in the rows (docs/RESULTS.md, "Time per image from 10k to full size").
SAVE_SECONDS = 5.0


def _decode(out: Path, src: Split, todo: np.ndarray, crop_size: int, mode: str, workers: int | None,
            progress: bool) -> None:
    affine, sizes, done = (np.load(out / f"{n}.npy") for n in ("affine", "sizes", "done"))
    workers = workers or os.cpu_count() or 1
    step = DECODE_CHUNK
    jobs = [(todo[i:i + step], [str(src.image_dir / src.names[j]) for j in todo[i:i + step]], crop_size, mode)
            for i in range(0, len(todo), step)]
    done_bar = bar(total=len(todo), desc=f"cache {src.name} {crop_size}px {mode}", disable=not progress, unit="img")

    def save_state() -> None:  # every SAVE_SECONDS and at the end, so a killed build resumes where it stopped
        for n, arr in (("affine", affine), ("sizes", sizes), ("done", done)):
            _save(out / f"{n}.npy", arr)

    def collect(results) -> None:
        saved = time.monotonic()
        for chunk in results:
            for i, a, wh in chunk:
                affine[i], sizes[i], done[i] = a, wh, True
            done_bar.update(len(chunk))
            if time.monotonic() - saved >= SAVE_SECONDS:
                save_state()
                saved = time.monotonic()

    images_path = str(out / "images.npy")
    try:
        if workers > 1 and len(todo) > step:
            with process_pool(workers, _init_worker, (images_path,)) as ex:
                collect(ex.map(_decode_chunk, jobs))
        else:
            _init_worker(images_path)
            collect(map(_decode_chunk, jobs))
    finally:
        _worker.clear()
        save_state()
        done_bar.close()


def open_cache(path: Path | str) -> Cache:
    path = Path(path)
    try:
        m = json.loads((path / "manifest.json").read_text())
        if not np.load(path / "done.npy").all():
            raise DataError(f"{path}: cache build is incomplete; run build_cache again to resume it")
        lm = path / "landmarks.npy"
        return Cache(path=path, names=np.array(json.loads((path / "names.json").read_text()), dtype=str),
                     images=np.load(path / "images.npy", mmap_mode="r"), affine=np.load(path / "affine.npy"),
                     sizes=np.load(path / "sizes.npy"),
                     landmarks=np.load(lm, mmap_mode="r") if lm.is_file() else None,   # 1.5 GB in 2020: paged
                     crop_size=m["size"], mode=m["mode"], synthetic=m.get("synthetic", False))
    except (OSError, ValueError, EOFError, KeyError) as e:
        raise DataError(f"{path}: unreadable cache ({type(e).__name__}: {e}); build_cache rebuilds it") from None
