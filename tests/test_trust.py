"""What a run used to trust without checking (issue 21): the data's identity, weights files, the contest
zip, caches, run-dir side files, images that decode to something else, submissions, the scripts' own
contract, and worker processes forked from a threaded kernel. Each fault is caught, in one line naming
the file, and nothing already written is lost."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import zip_of
import torch
import torchvision
from PIL import Image

from landmarklib import csvfiles, data, images, submission, train
from landmarklib.cache import build_cache
from landmarklib.data import fingerprint
from landmarklib.errors import DataError
from landmarklib.unpack import unpack_contest
from landmarklib.models import create_model
from landmarklib.train import fit
from landmarklib.workers import process_pool

ROOT = Path(__file__).resolve().parents[1]
TINY = {"arch": "resnet18", "crop_size": 32, "batch_size": 8, "device": "cpu", "workers": 1, "epochs": 1,
        "max_train_steps": 1}


def _cli(main, args, capsys):
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def _edit_in_place(csv: Path, row: int, n: int = 40) -> None:
    """Change n coordinates of one row (line row + 2) without changing the file's length or mtime."""
    st = csv.stat()
    lines = csv.read_bytes().split(b"\n")
    fields = lines[row + 1].split(b"\t")
    for i in range(1, n + 1):
        fields[i] = fields[i][:-1] + (b"1" if fields[i][-1:] != b"1" else b"2")
    lines[row + 1] = b"\t".join(fields)
    csv.write_bytes(b"\n".join(lines))
    assert csv.stat().st_size == st.st_size
    os.utime(csv, ns=(st.st_atime_ns, st.st_mtime_ns))        # as a sync tool or touch -r does


# --- 1. data identity -----------------------------------------------------------------------------

def test_an_edit_that_keeps_length_and_mtime_changes_the_fingerprint_and_the_cache(synth_copy, tmp_path):
    csv = synth_copy / "train" / "landmarks.csv"
    before = fingerprint(synth_copy)
    old = build_cache(synth_copy, "train", tmp_path, crop_size=32, workers=1, progress=False)
    old_labels = np.array(old.landmarks)
    _edit_in_place(csv, row=30)       # the middle of the file: outside the old hash's first and last 64 KiB
    assert fingerprint(synth_copy) != before
    new = build_cache(synth_copy, "train", tmp_path, crop_size=32, workers=1, progress=False)
    assert not np.array_equal(np.array(new.landmarks)[30], old_labels[30])     # the new labels, not the old ones
    np.testing.assert_array_equal(np.array(new.landmarks)[30], data.load_split(synth_copy, "train").landmarks[30])
    assert json.loads((new.path / "manifest.json").read_text())["csv_sha256"] == data.file_digest(csv)


def test_a_run_does_not_resume_on_data_edited_in_place(synth_copy, tmp_path):
    cfg = TINY | {"data_dir": str(synth_copy), "cache_dir": str(tmp_path / "cache"), "run_dir": str(tmp_path / "run")}
    fit(cfg, progress=False)
    _edit_in_place(synth_copy / "train" / "landmarks.csv", row=30)
    with pytest.raises(ValueError, match="was trained on other data"):
        fit(cfg | {"epochs": 2}, progress=False)


def test_a_run_recorded_before_the_content_hash_still_resumes(synth_dir, tmp_path):
    cfg = TINY | {"data_dir": str(synth_dir), "cache_dir": str(tmp_path / "cache"), "run_dir": str(tmp_path / "run")}
    fit(cfg, progress=False)
    config = tmp_path / "run" / "config.json"
    saved = json.loads(config.read_text())
    saved["data"] = {"landmarks_csv": "123:abc", **{k: v for k, v in saved["data"].items() if "sha256" not in k}}
    config.write_text(json.dumps(saved))
    assert len(fit(cfg | {"epochs": 2}, progress=False)) == 2


# --- 2. weights files -----------------------------------------------------------------------------

def test_a_runs_own_best_pt_loads_whole_as_weights(synth_dir, tmp_path, capsys):
    fit(TINY | {"data_dir": str(synth_dir), "cache_dir": str(tmp_path / "cache"), "run_dir": str(tmp_path / "a")},
        progress=False)
    best = torch.load(tmp_path / "a" / "best.pt", weights_only=True)["model"]
    model = create_model("resnet18", weights_path=tmp_path / "a" / "best.pt")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, best[k])                     # backbone and head
    assert model.weights.endswith("backbone 100% head")
    assert "100.0% of resnet18's backbone, and the head" in capsys.readouterr().out


@pytest.mark.parametrize("wrap", [
    lambda s: s,                                                          # torchvision's released weights
    lambda s: {"state_dict": {"module." + k: v for k, v in s.items()}, "epoch": 3},  # timm's train script, DDP
    lambda s: {"model": {"_orig_mod." + k: v for k, v in s.items()}, "optimizer": {}},  # a compiled model's
], ids=["state-dict", "timm-ddp", "compiled"])
def test_the_usual_checkpoint_shapes_load(tmp_path, wrap):
    ref = torchvision.models.resnet18()
    torch.save(wrap(ref.state_dict()), tmp_path / "w.pt")
    model = create_model("resnet18", weights_path=tmp_path / "w.pt")
    torch.testing.assert_close(model.backbone.layer4[1].bn2.running_var, ref.layer4[1].bn2.running_var)
    assert model.weights.endswith("backbone 100%")                 # the 1000-class fc is not our head


def test_weights_for_another_arch_are_refused_saying_how_much_matched(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pt")
    with pytest.raises(DataError, match=r"r18.pt: supplies 2\d% of resnet50's backbone weights \(\d+ of 265 tensors; "
                                        r"first missing 'layer1.0.conv1.weight': \(64, 64, 3, 3\) in the file"):
        create_model("resnet50", weights_path=tmp_path / "r18.pt")


@pytest.mark.parametrize("content, message", [
    (b"hello, not weights\n", "not a readable PyTorch weights file"),
    (None, r"holds no state dict \(found \['epoch'\]\)"),
], ids=["text", "no-state"])
def test_a_weights_file_that_is_not_one_is_refused_before_anything_is_written(synth_dir, tmp_path, capsys, content,
                                                                             message):
    w = tmp_path / "w.pt"
    w.write_bytes(content) if content else torch.save({"epoch": 3}, w)
    rc, err = _cli(train.main, ["--data-dir", synth_dir, "--cache-dir", tmp_path / "cache", "--run-dir",
                                tmp_path / "run", "--weights-path", w, "--device", "cpu"], capsys)
    assert rc == 2 and err.count("\n") == 1 and err.startswith(f"error: {w}: ")
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


# --- 3. unpacking the contest zip -----------------------------------------------------------------

def test_a_corrupt_zip_replaced_by_a_good_one_of_the_same_size_unpacks(synth_dir, tmp_path):
    good = zip_of(synth_dir, tmp_path / "good.zip")
    z = tmp_path / "drive" / "contest.zip"
    z.parent.mkdir()
    raw = bytearray(good.read_bytes())
    raw[len(raw) // 3:len(raw) // 3 + 4000] = bytes(4000)        # a broken download: same size, zeros inside
    z.write_bytes(bytes(raw))
    scratch = tmp_path / "scratch"
    with pytest.raises(DataError, match="contest.zip: not a readable zip file"):
        unpack_contest(z, tmp_path / "data", scratch=scratch)
    assert list(scratch.iterdir()) == []                            # the failed unpack's copy is gone
    shutil.copyfile(good, z)                                        # downloaded again: same size
    unpack_contest(z, tmp_path / "data", scratch=scratch)
    assert (tmp_path / "data" / ".unpacked").is_file() and data.load_split(tmp_path / "data", "train")


def test_a_kept_scratch_copy_is_trusted_only_with_the_zips_size_and_mtime(synth_dir, tmp_path):
    z = zip_of(synth_dir, tmp_path / "drive" / "contest.zip")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "contest.zip").write_bytes(bytes(z.stat().st_size))   # a stale copy of the same size
    unpack_contest(z, tmp_path / "data", scratch=scratch)
    assert (tmp_path / "data" / ".unpacked").is_file()


def test_unpacking_over_the_demo_set_replaces_it(synth_dir, synth_copy, tmp_path, capsys):
    other = data.load_split(synth_dir, "train")
    contest = tmp_path / "contest"
    from landmarklib.synth import make_dataset
    make_dataset(contest, n_train=40, n_test=10, seed=9, workers=1)
    z = zip_of(contest, tmp_path / "contest.zip")
    assert data.is_synthetic(synth_copy)
    unpack_contest(z, synth_copy, scratch=tmp_path / "scratch")
    assert "replacing the synthetic demo set" in capsys.readouterr().out
    assert not data.is_synthetic(synth_copy)
    images = sorted(p.name for p in (synth_copy / "train" / "images").iterdir())
    assert images == sorted(p.name for p in (contest / "train" / "images").iterdir())     # no demo image left
    assert len(data.load_split(synth_copy, "train").names) == 40 != len(other.names)


def test_a_zip_with_two_data_sets_is_refused_naming_them(synth_dir, tmp_path):
    z = zip_of(synth_dir, tmp_path / "two.zip", prefix="A/")
    with zipfile.ZipFile(z, "a") as zf:
        zf.write(synth_dir / "train" / "landmarks.csv", "B/train/landmarks.csv")
    with pytest.raises(DataError, match=r"two.zip: holds 2 data sets \(A/train/landmarks.csv, B/train/landmarks.csv\)"):
        unpack_contest(z, tmp_path / "data", scratch=tmp_path / "scratch")


def test_the_marker_is_written_last_after_test_points(synth_dir, tmp_path):
    z = zip_of(synth_dir, tmp_path / "drive" / "contest.zip", skip=("SYNTHETIC.json", "test_points.csv"))
    with pytest.raises(DataError, match="test_points.csv: missing, and no test_points.csv given"):
        unpack_contest(z, tmp_path / "data", scratch=tmp_path / "scratch")
    assert not (tmp_path / "data" / ".unpacked").exists()          # unfinished: a rerun does the rest
    unpack_contest(z, tmp_path / "data", test_points=synth_dir / "test" / "test_points.csv",
                   scratch=tmp_path / "scratch")
    assert (tmp_path / "data" / ".unpacked").is_file() and data.has_layout(tmp_path / "data")


# --- 4. caches ------------------------------------------------------------------------------------

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


# --- 5. run-dir side files ------------------------------------------------------------------------

@pytest.mark.parametrize("content", ["", "{\"device\": \"cpu\"}", "[1, 2"], ids=["empty", "object", "half"])
def test_an_unreadable_device_json_is_kept_aside_and_the_run_goes_on(synth_dir, tmp_path, content, capsys):
    cfg = TINY | {"data_dir": str(synth_dir), "cache_dir": str(tmp_path / "cache"), "run_dir": str(tmp_path / "run")}
    fit(cfg, progress=False)
    (tmp_path / "run" / "device.json").write_text(content)
    assert len(fit(cfg | {"epochs": 2}, progress=False)) == 2
    starts = json.loads((tmp_path / "run" / "device.json").read_text())
    assert len(starts) == 1 and starts[0]["epoch"] == 1
    assert (tmp_path / "run" / "device.json.unreadable").read_text() == content
    assert "device.json: " in capsys.readouterr().out


# --- 6. images that decode to something else ------------------------------------------------------

def _row_image(root: Path, row: int) -> Path:
    return root / "train" / "images" / data.load_split(root, "train").names[row]


def test_a_16_bit_png_under_an_images_name_is_refused_not_cached_white(synth_copy, tmp_path, capsys):
    p = _row_image(synth_copy, 7)
    gray = np.asarray(Image.open(p).convert("L"), np.uint16) * 257
    Image.fromarray(gray).save(p, "PNG")                          # mode I;16, named .jpg
    with pytest.raises(DataError, match=rf"{p.name}: a I;16 image \(more than 8 bits per channel"):
        build_cache(synth_copy, "train", tmp_path, crop_size=32, workers=1, progress=False)
    rc, err = _cli(data.main, ["check", "--data-dir", synth_copy], capsys)
    assert rc == 2 and f"{p.name}: not a JPEG (PNG, I;16)" in err


def test_exif_orientation_is_applied_as_cv2_imread_does(synth_copy, tmp_path, capsys):
    straight = build_cache(synth_copy, "train", tmp_path / "a", crop_size=32, workers=1, progress=False)
    p = _row_image(synth_copy, 5)
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


def test_an_image_replaced_by_a_half_size_copy_is_named_by_check_and_flagged_by_the_eda(synth_copy, capsys):
    """Its labels are not that image's: like another image's labels, a wrong label (the EDA's to flag
    for the blocklist), no longer reported as valid input."""
    from landmarklib import eda
    p = _row_image(synth_copy, 9)
    im = Image.open(p)
    im.resize((im.width // 2, im.height // 2)).save(p, "JPEG")
    report = data.check(synth_copy, workers=1)
    assert report["train"]["rows_mostly_outside"] >= 1
    text = data.format_report(report)
    assert f"first {synth_copy / 'train' / 'landmarks.csv'}:11: " in text
    assert f"of 971 points outside the {im.width // 2}x{im.height // 2} image '{p.name}': not labels of that image" in text
    flagged = eda.score_annotations(synth_copy, use_model=False, progress=False)
    assert flagged.set_index("file_name").loc[p.name, "flagged"]


# --- 7. submissions -------------------------------------------------------------------------------

def _submission(synth_dir, tmp_path):
    names, idx = csvfiles.read_test_points(synth_dir / "test" / "test_points.csv")
    pts = np.random.default_rng(0).uniform(0, 100, (len(names), 971, 2))
    return submission.write_submission(tmp_path / "sub.csv", names, pts, idx)


@pytest.mark.parametrize("value", ["1e300", "-2e5"])
def test_a_value_no_image_has_is_refused_on_its_line(synth_dir, tmp_path, capsys, value):
    p = _submission(synth_dir, tmp_path)
    lines = p.read_text().splitlines()
    cells = lines[3].split(",")
    cells[5] = value
    lines[3] = ",".join(cells)
    p.write_text("\n".join(lines) + "\n")
    rc, err = _cli(submission.main, ["check", p, "--data-dir", synth_dir], capsys)
    assert rc == 2 and f"sub.csv:4: column 'Point_M2_X' is {float(value):g}, not a pixel coordinate" in err


@pytest.mark.parametrize("where", ["end", "middle"])
def test_a_blank_line_in_a_submission_is_named(synth_dir, tmp_path, capsys, where):
    p = _submission(synth_dir, tmp_path)
    lines = p.read_text().splitlines()
    lines.insert(len(lines) if where == "end" else 5, "")
    p.write_text("\n".join(lines) + "\n")
    rc, err = _cli(submission.main, ["check", p, "--data-dir", synth_dir], capsys)
    line = len(lines) if where == "end" else 6
    assert rc == 2 and f"sub.csv:{line}: blank line" in err


# --- 8. the scripts' own contract -----------------------------------------------------------------

def test_run_all_with_a_python_that_lacks_packages_installs_nothing_and_says_what(tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    before = sorted(p.name for p in (tmp_path / "bare").rglob("*"))
    out = subprocess.run(["bash", "run_all.sh"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=os.environ | {"PYTHON": str(tmp_path / "bare" / "bin" / "python"),
                                           "OUT_DIR": str(tmp_path / "out")})
    assert out.returncode == 2
    assert out.stderr.startswith(f"error: PYTHON={tmp_path / 'bare' / 'bin' / 'python'} lacks torch torchvision")
    assert sorted(p.name for p in (tmp_path / "bare").rglob("*")) == before and not (tmp_path / "out").exists()


def test_run_all_with_out_dir_a_file_is_one_error_line(tmp_path):
    (tmp_path / "afile").write_text("")
    out = subprocess.run(["bash", "run_all.sh"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=os.environ | {"PYTHON": sys.executable, "OUT_DIR": str(tmp_path / "afile")})
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert out.stderr.startswith(f"error: OUT_DIR={tmp_path / 'afile'}: cannot make")


@pytest.mark.parametrize("device", ["meta", "tpu", "cuda:x"])
def test_a_device_that_is_not_one_to_train_on_is_refused_by_name(synth_dir, tmp_path, capsys, device):
    rc, err = _cli(train.main, ["--data-dir", synth_dir, "--run-dir", tmp_path / "run", "--device", device], capsys)
    assert rc == 2 and err.startswith(f"error: device: {device!r} is not a device to train on")
    assert not (tmp_path / "run").exists()


def test_a_value_error_says_how_to_see_its_traceback(synth_dir, tmp_path):
    args = [sys.executable, "-m", "landmarklib.train", "--data-dir", str(synth_dir), "--device", "meta"]
    one = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    assert one.returncode == 2 and "LANDMARKLIB_TRACEBACK=1 shows where it came from" in one.stderr
    assert "Traceback" not in one.stderr
    full = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=os.environ | {"LANDMARKLIB_TRACEBACK": "1"})
    assert full.returncode == 1 and "Traceback (most recent call last)" in full.stderr and "runtime.py" in full.stderr


# --- 9. worker processes in a threaded kernel -----------------------------------------------------

def _parent_pid(_):
    return os.getppid()


def test_pools_start_their_workers_from_a_fork_server_not_from_this_threaded_process(monkeypatch):
    monkeypatch.delenv("LANDMARKLIB_START_METHOD", raising=False)
    torch.set_num_threads(2)
    torch.ones(1000, 1000) @ torch.ones(1000, 1000)                # torch's worker threads are running
    with process_pool(2) as ex:
        assert ex._mp_context.get_start_method() == "forkserver"
        parents = set(ex.map(_parent_pid, range(4)))
    assert os.getpid() not in parents                             # forked by the server, not by us


def test_every_pool_of_the_data_stages_starts_by_forkserver_and_builds_the_same(tmp_path, monkeypatch):
    """The demo set, the image headers and the cache build each use a pool when there is enough work;
    each is started by the fork server, and what it builds equals an in-process build."""
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing
    monkeypatch.delenv("LANDMARKLIB_START_METHOD", raising=False)
    methods = []
    real_init = ProcessPoolExecutor.__init__

    def spy(self, max_workers=None, mp_context=None, *a, **k):
        methods.append((mp_context or multiprocessing.get_context()).get_start_method())
        real_init(self, max_workers, mp_context, *a, **k)
    monkeypatch.setattr(ProcessPoolExecutor, "__init__", spy)
    from landmarklib.synth import make_dataset
    demo = make_dataset(tmp_path / "demo", n_train=120, n_test=10, seed=4, workers=2)
    paths = [str(p) for p in sorted((demo / "train" / "images").iterdir())] * 2
    np.testing.assert_array_equal(images.image_sizes(paths, workers=2), images.image_sizes(paths, workers=1))
    pooled = build_cache(demo, "train", tmp_path / "a", crop_size=32, workers=2, progress=False)
    assert methods == ["forkserver"] * 3
    alone = build_cache(demo, "train", tmp_path / "b", crop_size=32, workers=1, progress=False)
    np.testing.assert_array_equal(pooled.images, alone.images)
    np.testing.assert_array_equal(pooled.affine, alone.affine)


def test_a_script_without_a_main_guard_gets_told_what_its_workers_need(tmp_path):
    """forkserver workers import the main script again; one whose top level calls landmarklib would run
    again in each worker. The pool's failure says so, and how to fix it, not a bare BrokenProcessPool."""
    script = tmp_path / "mine.py"
    script.write_text("from landmarklib.synth import make_dataset\n"
                      f"make_dataset({str(tmp_path / 'demo')!r}, n_train=60, n_test=5, seed=0, workers=2)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env=os.environ | {"LANDMARKLIB_START_METHOD": ""})
    assert out.returncode == 1
    assert 'DataError: a worker process died' in out.stderr and 'if __name__ == "__main__":' in out.stderr
