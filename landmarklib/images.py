"""Reading the contest's images: upright by their EXIF orientation (as the organizers' cv2.imread reads
them), 8 bits a channel, and their sizes from the headers alone."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DataError
from .progress import bar
from .workers import process_pool

EXIF_ORIENTATION = 0x0112   # the EXIF tag cv2.imread (the organizers' loader) applies, and so do we
EIGHT_BIT_MODES = {"1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "YCbCr", "PA", "La", "RGBa"}


def file_kind(path: Path) -> str:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "a broken link"
    return next((what for test, what in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
                                          (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
                                          (stat.S_ISDIR, "a folder")) if test(mode)), "not a file")


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation (1..8; 1 = as stored) of an open image, read from its header."""
    try:
        value = int(im.getexif().get(EXIF_ORIENTATION, 1))
    except (ValueError, TypeError, OSError, SyntaxError):   # a damaged EXIF block: the pixels as stored
        return 1
    return value if 1 <= value <= 8 else 1


def open_image(path: Path | str) -> Image.Image:
    """An image as the labels see it: turned upright by its EXIF orientation, as cv2.imread (the
    organizers' loader) does. Only the rare oriented image is decoded here; the others stay lazy
    (the cache's JPEG draft still applies). An image of more than 8 bits per channel (a 16-bit PNG)
    is a DataError: converting it to 8-bit RGB would clip it to white."""
    im = Image.open(path)
    if im.mode not in EIGHT_BIT_MODES:
        im.close()
        raise DataError(f"{path}: a {im.mode} image (more than 8 bits per channel or not a photo); "
                        f"the contest's images are 8-bit JPEGs")
    if exif_orientation(im) != 1:
        with im:
            return ImageOps.exif_transpose(im)
    return im


def _image_size(path: str) -> tuple[int, int, int] | str:
    """(width, height as displayed, EXIF orientation) from the header, or what is wrong. A JPEG must end
    with its end-of-image marker: a truncated file (a broken download or unzip) is caught here without
    decoding it."""
    try:
        with Image.open(path) as im:
            if im.format != "JPEG":
                return f"not a JPEG ({im.format}, {im.mode})"
            if im.mode not in EIGHT_BIT_MODES:
                return f"a {im.mode} JPEG; the contest's images are 8-bit"
            orientation = exif_orientation(im)
            w, h = im.size
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 1024))
            if b"\xff\xd9" not in f.read():
                return "truncated JPEG (no end-of-image marker)"
        return (h, w, orientation) if orientation >= 5 else (w, h, orientation)   # 5..8 turn it a quarter
    except Image.DecompressionBombError as e:
        return f"image too large to decode safely: {e}"
    except (UnidentifiedImageError, OSError) as e:
        return f"unreadable image: {e}"


def image_sizes(paths: list[str], workers: int | None = None, desc: str = "image headers",
                orientations: bool = False) -> np.ndarray:
    """(N, 2) width, height as displayed (EXIF orientation applied) from the image headers, over a
    process pool; with orientations=True, (N, 3) with each image's EXIF orientation. Bad files raise
    DataError."""
    workers = workers or os.cpu_count() or 1
    chunk = max(1, min(256, len(paths) // (workers * 4) or 1))
    if workers > 1 and len(paths) > 200:
        with process_pool(workers) as ex:
            results = list(bar(ex.map(_image_size, paths, chunksize=chunk), total=len(paths), desc=desc))
    else:
        results = [_image_size(p) for p in bar(paths, desc=desc, disable=len(paths) < 200)]
    for p, r in zip(paths, results):
        if isinstance(r, str):
            raise DataError(f"{p}: {r}")
    out = np.array(results, dtype=np.int64).reshape(-1, 3)
    return out if orientations else out[:, :2]

