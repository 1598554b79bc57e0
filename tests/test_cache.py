"""cache.py: the decode cache built once, reused, resumed, rebuilt when its inputs change, found when damaged."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import landmarklib.atomic as atomic_mod
import landmarklib.cache as cache_mod
from conftest import ROOT, edit_in_place, enospc
from landmarklib import data
from landmarklib.cache import build_cache
from landmarklib.data import fingerprint, load_split
from landmarklib.errors import DataError
from landmarklib.geometry import encode, fit_affine, warp_image
from landmarklib.images import image_sizes


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


@pytest.mark.parametrize("damage", [
    lambda c: (c / "manifest.json").write_text("{not json"),
    lambda c: (c / "images.npy").write_bytes((c / "images.npy").read_bytes()[:5000]),
    lambda c: (c / "affine.npy").write_bytes((c / "affine.npy").read_bytes()[:100]),
    lambda c: (c / "done.npy").unlink(),
    lambda c: (c / "names.json").unlink(),
    lambda c: (c / "landmarks.npy").unlink(),
], ids=["manifest", "images", "affine", "done", "names", "landmarks"])
def test_a_damaged_cache_is_detected_and_rebuilt(synth_dir, tmp_path, damage, capsys):
    clean = build_cache(synth_dir, "train", tmp_path, crop_size=32, workers=1, progress=False)
    reference = {k: np.array(getattr(clean, k)) for k in ("images", "affine", "sizes", "landmarks")}
    damage(clean.path)
    again = build_cache(synth_dir, "train", tmp_path, crop_size=32, workers=1, progress=False)
    for k, v in reference.items():
        np.testing.assert_array_equal(getattr(again, k), v)
    assert list(again.names) == list(clean.names)


def test_a_full_disk_during_a_cache_build_keeps_the_other_cache(synth_dir, tmp_path, monkeypatch):
    first = build_cache(synth_dir, "train", tmp_path, crop_size=32, workers=1, progress=False)
    before = {p.name: p.read_bytes() for p in first.path.iterdir()}
    monkeypatch.setattr(cache_mod.os, "posix_fallocate", enospc)
    with pytest.raises(DataError, match=r"train_40_crop: no space left on the device"):
        build_cache(synth_dir, "train", tmp_path, crop_size=40, workers=1, progress=False)
    assert {p.name: p.read_bytes() for p in first.path.iterdir()} == before
    monkeypatch.undo()
    assert build_cache(synth_dir, "train", tmp_path, crop_size=40, workers=1, progress=False).images.shape[1] == 40


def test_a_cache_larger_than_the_free_space_is_refused_up_front(synth_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(atomic_mod.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DataError, match=r"the cache needs 0.00 GiB, 0.00 GiB free there"):
        build_cache(synth_dir, "train", tmp_path, crop_size=32, workers=1, progress=False)


def test_an_edit_that_keeps_length_and_mtime_changes_the_fingerprint_and_the_cache(synth_copy, tmp_path):
    csv = synth_copy / "train" / "landmarks.csv"
    before = fingerprint(synth_copy)
    old = build_cache(synth_copy, "train", tmp_path, crop_size=32, workers=1, progress=False)
    old_labels = np.array(old.landmarks)
    edit_in_place(csv, row=30)       # the middle of the file: outside the old hash's first and last 64 KiB
    assert fingerprint(synth_copy) != before
    new = build_cache(synth_copy, "train", tmp_path, crop_size=32, workers=1, progress=False)
    assert not np.array_equal(np.array(new.landmarks)[30], old_labels[30])     # the new labels, not the old ones
    np.testing.assert_array_equal(np.array(new.landmarks)[30], data.load_split(synth_copy, "train").landmarks[30])
    assert json.loads((new.path / "manifest.json").read_text())["csv_sha256"] == data.file_digest(csv)


@pytest.mark.parametrize("damage", [
    lambda p: p.write_bytes(p.read_bytes()[:1000]),                                       # truncated
    lambda p: np.save(p, np.zeros((3, 971, 2), np.int16)),                                # wrong shape
    lambda p: np.save(p, np.zeros(np.load(p).shape, np.float64)),                         # wrong type
], ids=["truncated", "shape", "dtype"])
def test_a_damaged_landmarks_npy_is_found_and_written_again(synth_dir, tmp_path, damage, capsys):
    clean = build_cache(synth_dir, "train", tmp_path, crop_size=32, workers=1, progress=False)
    labels = np.array(clean.landmarks)
    damage(clean.path / "landmarks.npy")
    again = build_cache(synth_dir, "train", tmp_path, crop_size=32, workers=1, progress=False)
    np.testing.assert_array_equal(np.array(again.landmarks), labels)
    out = capsys.readouterr().out
    assert "landmarks.npy: " in out and "writing it again" in out


def test_two_processes_building_one_cache_take_turns(synth_dir, tmp_path):
    """Two builders of one cache (two notebooks on one runtime) used to share temp names and delete each
    other's files. Here a third holder keeps the lock while both start: both wait, writing nothing;
    released, they take turns and both end with the whole cache."""
    import fcntl
    code = ("import sys; from landmarklib.cache import build_cache; "
            "c = build_cache(sys.argv[1], 'train', sys.argv[2], crop_size=40, workers=2, progress=True); "
            "print('rows', int(c.images.reshape(len(c), -1).any(1).sum()))")
    env = os.environ | {"TQDM_DISABLE": "1"}
    with open(tmp_path / "train_40_crop.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        procs = [subprocess.Popen([sys.executable, "-c", code, str(synth_dir), str(tmp_path)], env=env, cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        for p in procs:
            assert "another process is building it; waiting for it to finish" in p.stdout.readline()
        assert not (tmp_path / "train_40_crop").exists()
        fcntl.flock(lock, fcntl.LOCK_UN)
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all("rows 60" in out for out, _ in outs)                   # every row decoded, none zero-filled
    ref = build_cache(synth_dir, "train", tmp_path / "alone", crop_size=40, workers=1, progress=False)
    np.testing.assert_array_equal(build_cache(synth_dir, "train", tmp_path, crop_size=40, progress=False).images,
                                  ref.images)
