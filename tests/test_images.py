"""images.py: images read upright and at 8 bits, or refused by name."""
import numpy as np
import pytest
from PIL import Image

from conftest import row_image, run_cli
from landmarklib import data, images
from landmarklib.cache import build_cache
from landmarklib.errors import DataError


def test_a_16_bit_png_under_an_images_name_is_refused_not_cached_white(synth_copy, tmp_path, capsys):
    p = row_image(synth_copy, 7)
    gray = np.asarray(Image.open(p).convert("L"), np.uint16) * 257
    Image.fromarray(gray).save(p, "PNG")                          # mode I;16, named .jpg
    with pytest.raises(DataError, match=rf"{p.name}: a I;16 image \(more than 8 bits per channel"):
        build_cache(synth_copy, "train", tmp_path, crop_size=32, workers=1, progress=False)
    rc, err = run_cli(data.main, ["check", "--data-dir", synth_copy], capsys)
    assert rc == 2 and f"{p.name}: not a JPEG (PNG, I;16)" in err


def test_exif_orientation_is_applied_as_cv2_imread_does(synth_copy, tmp_path, capsys):
    straight = build_cache(synth_copy, "train", tmp_path / "a", crop_size=32, workers=1, progress=False)
    p = row_image(synth_copy, 5)
    upright = Image.open(p)
    w, h = upright.size
    exif = upright.getexif()
    exif[images.EXIF_ORIENTATION] = 6                              # "rotate 90 clockwise to display"
    upright.transpose(Image.Transpose.ROTATE_90).save(p, "JPEG", quality=98, exif=exif.tobytes())
    assert Image.open(p).size == (h, w)                           # stored on its side
    report = data.check(synth_copy, workers=1)
    assert report["train"]["exif_oriented"] == 1
    assert "1 images carry an EXIF orientation" in data.format_report(report)
    turned = build_cache(synth_copy, "train", tmp_path / "b", crop_size=32, workers=1, progress=False)
    assert tuple(turned.sizes[5]) == (w, h)
    diff = np.abs(turned.images[5].astype(int) - straight.images[5].astype(int)).mean()
    assert diff < 3, diff                                         # the same picture, upright (JPEG noise only)
