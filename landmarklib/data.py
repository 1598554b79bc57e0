"""The contest's data set as a whole (docs/FORMAT.md): its two splits, the organizers' train/validation
split, the layout check and its report, and the data's identity.

    python -m landmarklib.data check --data-dir D

Every problem is a DataError whose message starts with `file:line:` so a user can open
the file at the right place; the CLI prints it and exits 2, without a traceback.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .csvfiles import CHUNK_ROWS, read_landmarks, read_test_points, where
from .errors import DataError, cli
from .images import file_kind, image_sizes
from .layout import N_POINTS
from .progress import bar

SPLIT_CSV = {"train": "landmarks.csv", "test": "test_points.csv"}   # the CSV that lists each split's images
MIN_SIDE = 16        # px: an image smaller than this on a side cannot hold a face
FAR_OUTSIDE = 10     # image sizes past an edge: no annotation of this image at all
MOSTLY_OUTSIDE = 0.5  # a row with more than this share of its points outside its image: not this image's labels


def split_indices(n: int, val_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """The organizers' split of landmarks.csv: the first rows train, the rest validate, unshuffled."""
    n_train = int(round(n * (1 - val_fraction)))
    return np.arange(n_train), np.arange(n_train, n)



def check_split(n_rows: int, val_fraction: float, batch_size: int, csv: Path | str) -> None:
    """Before anything is written: the organizers' split of n_rows leaves at least one validation image
    and at least one full batch to train on, or one line says which is missing and what to change."""
    train_idx, val_idx = split_indices(n_rows, val_fraction)
    if len(val_idx) == 0:
        raise DataError(f"{csv}: val_fraction {val_fraction:g} of {n_rows} rows leaves no validation image; "
                        f"give val_fraction {1 / max(n_rows, 1):.2g} or more")
    if len(train_idx) < batch_size:
        raise DataError(f"{csv}: {len(train_idx)} training rows (the {n_rows} rows less val_fraction "
                        f"{val_fraction:g}) is fewer than one batch of {batch_size}; lower batch_size or val_fraction")


@dataclass
class Split:
    """One split of the layout: its image folder, names, and landmarks where known."""
    name: str
    image_dir: Path
    names: np.ndarray
    landmarks: np.ndarray | None = None   # (N, 971, 2) original pixels
    indices: np.ndarray | None = None     # (N, 30) test point indices

    def image_path(self, i: int) -> Path:
        return self.image_dir / self.names[i]

    @property
    def csv(self) -> Path:
        """The CSV that lists this split's images (line i + 2 is row i)."""
        return self.image_dir.parent / SPLIT_CSV[self.name]


def load_split(data_dir: Path | str, split: str) -> Split:
    """'train' (landmarks.csv) or 'test' (test_points.csv, plus landmarks.csv when ground truth exists)."""
    d = Path(data_dir) / split
    if split == "train":
        names, lm = read_landmarks(d / "landmarks.csv")
        return Split("train", d / "images", names, landmarks=lm)
    if split == "test":
        names, idx = read_test_points(d / "test_points.csv")
        truth = None
        if (d / "landmarks.csv").is_file():
            tnames, truth = read_landmarks(d / "landmarks.csv")
            order = pd.Series(np.arange(len(tnames)), index=tnames).reindex(names).to_numpy()
            if np.isnan(order).any():
                missing = names[np.isnan(order)][0]
                raise DataError(f"{d / 'landmarks.csv'}: no row for test image {str(missing)!r}")
            truth = truth[order.astype(int)]
        return Split("test", d / "images", names, landmarks=truth, indices=idx)
    raise ValueError(f"unknown split {split!r}")


def check_images_exist(split: Split) -> None:
    """Every listed image must exist and be a regular file (a named pipe, socket or device, even behind
    a link, would block the first read for ever), checked up front (not mid-epoch)."""
    if not split.image_dir.is_dir():
        raise DataError(f"{split.image_dir}: image folder not found")
    present = {e.name: e for e in os.scandir(split.image_dir)}
    missing = [i for i, n in enumerate(split.names) if n not in present]
    if missing:
        by_form = {unicodedata.normalize("NFC", name): name for name in present}
        twin = by_form.get(unicodedata.normalize("NFC", str(split.names[missing[0]])))
        if twin is not None:   # NFC in the CSV, NFD on disk: copied from a Mac
            raise DataError(f"{where(split.csv, missing[0] + 2)}: image {str(split.names[missing[0]])!r} is on disk as "
                            f"{twin!r}, the same name in another Unicode normalization (a copy from a Mac writes "
                            f"NFD); rename the files to match the CSV (convmv -r -f utf8 -t utf8 --nfc --notest {split.image_dir})")
        raise DataError(f"{where(split.csv, missing[0] + 2)}: image {str(split.names[missing[0]])!r} not found in "
                        f"{split.image_dir} ({len(missing)} listed image(s) missing in all)")
    odd = [i for i, n in enumerate(split.names) if not present[n].is_file()]   # follows links; d_type, no stat
    if odd:
        path = split.image_path(odd[0])
        raise DataError(f"{path}: not a regular file but {file_kind(path)} (listed at {where(split.csv, odd[0] + 2)}; "
                        f"{len(odd)} such in all); put the image itself there")



def _absurd(lm: np.ndarray, size: np.ndarray) -> np.ndarray:
    """(N, 971) points more than FAR_OUTSIDE image sizes outside their image."""
    return ((lm < -FAR_OUTSIDE * size) | (lm > (FAR_OUTSIDE + 1) * size)).any(-1)


def label_ranges(split: Split, sizes: np.ndarray, chunk: int = CHUNK_ROWS) -> dict:
    """check()'s label statistics, CHUNK_ROWS rows at a time (no full-size boolean temporaries). Labels
    that are no annotation of their image (far outside it) are a DataError on their line; the cache
    build runs this too, with the sizes it decoded, so a run that skipped the check is covered. Rows
    with most of their points outside their image (another image's labels, or a resized or replaced
    image) are counted, the first named: wrong labels, which the EDA flags for the blocklist."""
    lm_all = split.landmarks
    r = {"x_range": [np.inf, -np.inf], "y_range": [np.inf, -np.inf], "points_outside_image": 0,
         "images_with_points_outside": 0, "rows_with_negative_coordinates": 0, "rows_beyond_an_image_size": 0,
         "rows_mostly_outside": 0, "first_mostly_outside": None}
    for i in range(0, len(lm_all), chunk):
        lm, size = lm_all[i:i + chunk], sizes[i:i + chunk, None, :]
        # Slightly outside is real (the 2020 data: -22 .. 1308). Beyond an image size past an edge a
        # label is wrong for this image (another image's labels, say): the EDA flags such rows for the
        # blocklist. Beyond FAR_OUTSIDE image sizes it is no annotation at all (1e30, another unit):
        # one such value blows the metric up, so nothing starts.
        absurd = _absurd(lm, size)
        rows = np.flatnonzero(absurd.any(1))
        if len(rows):
            j = rows[0]
            p = int(np.flatnonzero(absurd[j])[0])
            w, h = sizes[i + j]
            n_bad = sum(int(_absurd(lm_all[k:k + chunk], sizes[k:k + chunk, None, :]).any(1).sum())
                        for k in range(i, len(lm_all), chunk))
            raise DataError(f"{where(split.csv, i + j + 2)}: point {p} at ({lm[j, p, 0]:g}, {lm[j, p, 1]:g}) lies more "
                            f"than {FAR_OUTSIDE} image sizes outside its {w}x{h} image {str(split.names[i + j])!r} "
                            f"({n_bad} such row(s))")
        outside = ((lm < -0.5) | (lm > size - 0.5)).any(-1)
        mostly = np.flatnonzero(outside.mean(1) > MOSTLY_OUTSIDE)
        if len(mostly) and r["first_mostly_outside"] is None:
            j = mostly[0]
            w, h = sizes[i + j]
            r["first_mostly_outside"] = (f"{where(split.csv, i + j + 2)}: {int(outside[j].sum())} of {N_POINTS} points "
                                         f"outside the {w}x{h} image {str(split.names[i + j])!r}")
        r["rows_mostly_outside"] += len(mostly)
        for key, axis in (("x_range", 0), ("y_range", 1)):
            r[key] = [min(r[key][0], float(lm[..., axis].min())), max(r[key][1], float(lm[..., axis].max()))]
        r["points_outside_image"] += int(outside.sum())
        r["images_with_points_outside"] += int(outside.any(1).sum())
        r["rows_with_negative_coordinates"] += int((lm < 0).any((1, 2)).sum())
        r["rows_beyond_an_image_size"] += int(((lm < -size) | (lm > 2 * size)).any((1, 2)).sum())
    return r


def check(data_dir: Path | str, workers: int | None = None, splits: tuple[Split, Split] | None = None) -> dict:
    """Validate the whole layout; return counts and ranges. Raises DataError on the first problem.
    `splits`: (train, test) already parsed by load_split, so that they are not parsed again."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data folder not found")
    report: dict = {}
    train, test = splits or (load_split(data_dir, "train"), load_split(data_dir, "test"))
    check_images_exist(train)
    check_images_exist(test)
    for split in (train, test):
        sizes = image_sizes([str(split.image_path(i)) for i in range(len(split.names))], workers,
                            desc=f"{split.name} headers", orientations=True)
        oriented, sizes = int((sizes[:, 2] != 1).sum()), sizes[:, :2]
        small = np.flatnonzero(sizes.min(1) < MIN_SIDE)
        if len(small):
            i = small[0]
            raise DataError(f"{where(split.csv, i + 2)}: image {str(split.names[i])!r} is {sizes[i, 0]}x{sizes[i, 1]} px, "
                            f"too small to hold a face (at least {MIN_SIDE} px a side; {len(small)} such image(s))")
        r = {"images": len(split.names),
             "width": [int(sizes[:, 0].min()), int(sizes[:, 0].max())],
             "height": [int(sizes[:, 1].min()), int(sizes[:, 1].max())], "exif_oriented": oriented}
        if split.landmarks is not None:
            r |= label_ranges(split, sizes)
        report[split.name] = r
    report["test"]["ground_truth"] = test.landmarks is not None
    return report


def format_report(report: dict) -> str:
    lines = []
    for split in ("train", "test"):
        r = report[split]
        lines.append(f"{split}: {r['images']} images, width {r['width'][0]}..{r['width'][1]} px, "
                     f"height {r['height'][0]}..{r['height'][1]} px")
        if r.get("exif_oriented"):
            lines.append(f"  {r['exif_oriented']} images carry an EXIF orientation: they are read turned upright, as "
                         f"the organizers' cv2.imread reads them, and their labels taken to be on the upright image")
        if "x_range" in r:
            lines.append(f"  landmarks x {r['x_range'][0]:.0f}..{r['x_range'][1]:.0f}, "
                         f"y {r['y_range'][0]:.0f}..{r['y_range'][1]:.0f}; {r['points_outside_image']} points "
                         f"outside their image in {r['images_with_points_outside']} images (a little outside is normal); "
                         f"{r['rows_with_negative_coordinates']} rows with negative coordinates; "
                         f"{r['rows_beyond_an_image_size']} rows with points beyond an image size outside "
                         f"(wrong labels: the EDA notebook flags them)")
            if r["rows_mostly_outside"]:
                lines.append(f"  {r['rows_mostly_outside']} rows with most of their points outside their image, first "
                             f"{r['first_mostly_outside']}: not labels of that image (another image's, or the image "
                             f"resized or replaced): the EDA flags them; train with its blocklist to leave them out")
    lines.append(f"test ground truth (test/landmarks.csv): {'yes' if report['test']['ground_truth'] else 'no'}")
    return "\n".join(lines)



def footprint(data_dir: Path | str, cache_dir: Path | str | None = None) -> dict[str, int]:
    """Bytes on disk of the data set's parts and of each cache folder (for the data notebook)."""
    def size(folder: Path) -> int:
        return sum(e.stat().st_size for e in os.scandir(folder) if e.is_file()) if folder.is_dir() else 0
    d = Path(data_dir)
    out = {"train/images": size(d / "train" / "images"), "test/images": size(d / "test" / "images"),
           "csv files": size(d / "train") + size(d / "test")}
    caches = Path(cache_dir) if cache_dir else d / "cache"
    if caches.is_dir():
        out |= {f"cache/{c.name}": size(c) for c in sorted(caches.iterdir()) if c.is_dir()}
    return out


def has_layout(data_dir: Path | str) -> bool:
    d = Path(data_dir)
    return (d / "train" / "landmarks.csv").is_file() and (d / "test" / "test_points.csv").is_file()


def is_synthetic(data_dir: Path | str) -> bool:
    """Whether data_dir holds the synthetic demo set (synth writes SYNTHETIC.json beside its splits)."""
    return (Path(data_dir) / "SYNTHETIC.json").is_file()


_digests: dict = {}   # (path, device, inode, size, mtime, ctime) -> digest: one hash per file per process


def file_digest(path: Path | str) -> str:
    """The SHA-256 of a file's whole content (about 1.3 GB/s here; the 2020 landmarks.csv, 3 GB, in a
    few seconds): an edit that keeps the length and the mtime changes it. Remembered for this process
    while the file's stat (ctime included, which no tool can set back) is unchanged."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _digests:
        h = hashlib.sha256()
        with open(path, "rb") as f, bar(total=st.st_size, desc=f"hash {Path(path).name}", unit="B", unit_scale=True,
                                        disable=st.st_size < 1 << 30) as b:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
                b.update(len(block))
        _digests[key] = h.hexdigest()
    return _digests[key]


def fingerprint(data_dir: Path | str) -> dict:
    """The identity of a data set, by content (so it survives re-unpacking and moving, and no edit
    escapes it): the SHA-256 of train/landmarks.csv, the number of training images, and whether it
    is the demo set."""
    csv = Path(data_dir) / "train" / "landmarks.csv"
    if not csv.is_file():
        raise DataError(f"{csv}: not found (data_dir {data_dir} holds no contest layout)")
    return {"landmarks_csv_sha256": file_digest(csv)[:32],
            "train_images": len(os.listdir(Path(data_dir) / "train" / "images")),
            "synthetic": is_synthetic(data_dir)}


@cli
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m landmarklib.data", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="validate the layout and print counts")
    c.add_argument("--data-dir", required=True, type=Path, help="the contest layout folder")
    c.add_argument("--workers", type=int, default=None, help="processes reading image headers (default: all cores)")
    args = p.parse_args(argv)
    report = check(args.data_dir, args.workers)
    print(format_report(report))
    print("layout OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
