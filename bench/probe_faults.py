"""Fault probe: bad inputs and faults of the kinds a run used to trust without checking (issue 21:
data identity, weights files, the contest zip, caches, run-dir side files, images, submissions, the
scripts' contract, worker processes), plus earlier rounds' CSV faults, each run as a user would
meet it (a CLI or a script, in a fresh process) against a fresh copy of a small demo set.

Each case expects either an error (exit 2, one line `error: ...` matching what it must name) or a
recovery (exit 0 and the line saying what was repaired). Outcomes:
  good  as expected
  weak  a traceback, a message without the expected place, or a wrong exit code
  bad   a wrong result accepted (exit 0 where an error was due, or the expected check failed), or a hang

    python bench/probe_faults.py [--only SUBSTRING ...]
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from landmarklib.data import load_split  # noqa: E402
from landmarklib.synth import make_dataset  # noqa: E402

PY = sys.executable
TINY = ["--arch", "resnet18", "--crop-size", "32", "--batch-size", "8", "--device", "cpu", "--workers", "1",
        "--max-train-steps", "1", "--epochs", "1"]
CASES: list[tuple[str, str, object]] = []
BAR = re.compile(r"\d+%\|.*\||: \s*\d+%")   # a tqdm bar (a terminal's) or a headless bar's plain line


def case(kind: str, name: str):
    def register(fn):
        CASES.append((kind, name, fn))
        return fn
    return register


def run(args: list, env: dict | None = None, cwd: Path = ROOT, timeout: int = 300) -> tuple[int | None, str, str]:
    try:
        p = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                           env=os.environ | {"TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"} | (env or {}))
        return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired:
        return None, "", "hang"


def as_cli(code: str) -> list:
    """A library call run as a CLI would run it: errors.cli's one line and exit 2."""
    return [PY, "-c", "import sys; from landmarklib.errors import cli\n"
                      f"@cli\ndef main(argv):\n    {code}\n    return 0\nsys.exit(main())"]


def train(d: Path, t: Path, *extra, run_dir="run") -> list:
    return [PY, "-m", "landmarklib.train", "--data-dir", d, "--cache-dir", t / "cache", "--run-dir", t / run_dir,
            *TINY, *extra]


def expect_error(pattern: str):
    return ("error", pattern)


def expect_ok(pattern: str):
    return ("ok", pattern)


def row_image(d: Path, row: int) -> Path:
    return d / "train" / "images" / load_split(d, "train").names[row]


def edit_in_place(csv: Path, row: int) -> None:
    st = csv.stat()
    lines = csv.read_bytes().split(b"\n")
    fields = lines[row + 1].split(b"\t")
    for i in range(1, 41):
        fields[i] = fields[i][:-1] + (b"1" if fields[i][-1:] != b"1" else b"2")
    lines[row + 1] = b"\t".join(fields)
    csv.write_bytes(b"\n".join(lines))
    os.utime(csv, ns=(st.st_atime_ns, st.st_mtime_ns))


def zip_of(src: Path, dest: Path, prefix="DATA/", skip=("SYNTHETIC.json",), sep="/") -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w") as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file() and p.name not in skip and "cache" not in p.parts:
                zf.write(p, (prefix + p.relative_to(src).as_posix()).replace("/", sep))
    return dest


def unpack(z: Path, d: Path, scratch: Path, test_points: Path | None = None) -> list:
    tp = f", test_points={str(test_points)!r}" if test_points else ""
    return as_cli(f"from landmarklib.unpack import unpack_contest; unpack_contest({str(z)!r}, {str(d)!r}, "
                  f"scratch={str(scratch)!r}{tp}); print('unpacked')")


# --- 1. data identity -------------------------------------------------------------------------------

@case("data identity", "resume on landmarks.csv edited in place, length and mtime kept")
def _(d, t):
    assert run(train(d, t))[0] == 0
    edit_in_place(d / "train" / "landmarks.csv", 30)
    return train(d, t, "--epochs", "2"), expect_error("trained on other data")


@case("data identity", "cache after landmarks.csv edited in place, length and mtime kept")
def _(d, t):
    code = (f"from landmarklib.cache import build_cache; import numpy as np; "
            f"c = build_cache({str(d)!r}, 'train', {str(t)!r}, 32, workers=1, progress=False); "
            f"print(np.asarray(c.landmarks[30]).sum())")
    before = run([PY, "-c", code])[1]
    edit_in_place(d / "train" / "landmarks.csv", 30)
    truth = float(load_split(d, "train").landmarks[30].sum())
    return [PY, "-c", code], ("check", lambda rc, out, err: rc == 0 and out != before and float(out) == truth)


# --- 2. weights files ---------------------------------------------------------------------------------

@case("weights", "a text file as --weights-path")
def _(d, t):
    (t / "w.pt").write_text("not weights\n")
    return train(d, t, "--weights-path", t / "w.pt"), expect_error(r"w.pt: not a readable PyTorch weights file")


@case("weights", "an empty file as --weights-path")
def _(d, t):
    (t / "w.pt").write_bytes(b"")
    return train(d, t, "--weights-path", t / "w.pt"), expect_error(r"w.pt: not a readable PyTorch weights file")


@case("weights", "a run's own best.pt as --weights-path")
def _(d, t):
    assert run(train(d, t, run_dir="a"))[0] == 0
    return train(d, t, "--weights-path", t / "a" / "best.pt"), expect_ok(r"100.0% of resnet18's backbone, and the head")


@case("weights", "resnet18 weights for a resnet50 run")
def _(d, t):
    import torch
    import torchvision
    torch.save(torchvision.models.resnet18().state_dict(), t / "r18.pt")
    return train(d, t, "--arch", "resnet50", "--weights-path", t / "r18.pt"), \
        expect_error(r"r18.pt: supplies \d+% of resnet50's backbone weights")


@case("weights", "a checkpoint without a state dict (optimizer only)")
def _(d, t):
    import torch
    torch.save({"optimizer": {"lr": 1.0}, "epoch": 3}, t / "opt.pt")
    return train(d, t, "--weights-path", t / "opt.pt"), expect_error(r"opt.pt: holds no state dict")


@case("weights", "--weights-path ../../x/best.pt without --run-dir: run dir stays under runs/")
def _(d, t):
    assert run(train(d, t, run_dir="a"))[0] == 0
    (t / "x").mkdir()
    shutil.copy(t / "a" / "best.pt", t / "x" / "best.pt")
    (t / "work" / "deep").mkdir(parents=True)
    args = [PY, "-m", "landmarklib.train", "--data-dir", d, "--cache-dir", t / "cache", *TINY,
            "--weights-path", "../../x/best.pt"]
    return ("cwd", t / "work" / "deep", args), ("check", lambda rc, out, err: rc == 0 and
                                                 len(list((t / "work" / "deep" / "runs").glob("*/best.pt"))) == 1)


# --- 3. the contest zip -------------------------------------------------------------------------------

@case("zip", "corrupt download replaced by a good one of the same size")
def _(d, t):
    good = zip_of(d, t / "good.zip")
    z = t / "drive" / "contest.zip"
    z.parent.mkdir()
    raw = bytearray(good.read_bytes())
    raw[len(raw) // 3:len(raw) // 3 + 4000] = bytes(4000)
    z.write_bytes(bytes(raw))
    run(unpack(z, t / "unz", t / "scratch"))
    shutil.copyfile(good, z)
    return unpack(z, t / "unz", t / "scratch"), expect_ok("unpacked")


@case("zip", "a failed unpack leaves no scratch copy behind")
def _(d, t):
    z = t / "contest.zip"
    z.write_bytes(zip_of(d, t / "g.zip").read_bytes()[:50_000])
    return unpack(z, t / "unz", t / "scratch"), ("check", lambda rc, out, err: rc == 2 and "download it again" in err
                                                   and not any((t / "scratch").glob("*")))


@case("zip", "unpacking into a folder holding the demo set")
def _(d, t):
    contest = make_dataset(t / "contest", n_train=40, n_test=10, seed=9, workers=1)
    z = zip_of(contest, t / "contest.zip")
    return unpack(z, d, t / "scratch"), ("check", lambda rc, out, err: rc == 0 and not (d / "SYNTHETIC.json").exists()
                                          and len(list((d / "train" / "images").iterdir())) == 40)


@case("zip", "a zip holding two data sets")
def _(d, t):
    z = zip_of(d, t / "two.zip", prefix="A/")
    with zipfile.ZipFile(z, "a") as zf:
        zf.write(d / "train" / "landmarks.csv", "B/train/landmarks.csv")
    return unpack(z, t / "unz", t / "scratch"), expect_error(r"two.zip: holds 2 data sets")


@case("zip", "no test_points.csv anywhere, then given: the rerun completes")
def _(d, t):
    z = zip_of(d, t / "zip" / "contest.zip", skip=("SYNTHETIC.json", "test_points.csv"))
    rc, _, err = run(unpack(z, t / "unz", t / "scratch"))
    assert rc == 2 and "test_points.csv: missing" in err, err
    return unpack(z, t / "unz", t / "scratch", d / "test" / "test_points.csv"), \
        ("check", lambda rc, out, err: rc == 0 and (t / "unz" / ".unpacked").is_file()
         and (t / "unz" / "test" / "test_points.csv").is_file())


@case("zip", "zip-slip member")
def _(d, t):
    z = t / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("DATA/train/landmarks.csv", "x")
        zf.writestr("DATA/../../escaped.txt", "owned")
    return unpack(z, t / "unz", t / "scratch"), expect_error(r"evil.zip: member .* would be written outside")


# --- 4. caches ----------------------------------------------------------------------------------------

def _cache_then(d: Path, t: Path, damage) -> tuple:
    code = (f"from landmarklib.cache import build_cache; import numpy as np; "
            f"c = build_cache({str(d)!r}, 'train', {str(t / 'c')!r}, 32, workers=1, progress=False); "
            f"print(int(np.asarray(c.landmarks).astype(np.int64).sum()))")
    rc, good, err = run([PY, "-c", code])
    assert rc == 0, err
    damage(t / "c" / "train_32_crop" / "landmarks.npy")
    return [PY, "-c", code], ("check", lambda rc, out, err: rc == 0 and out.splitlines()[-1] == good.strip())


@case("cache", "landmarks.npy truncated")
def _(d, t):
    return _cache_then(d, t, lambda p: p.write_bytes(p.read_bytes()[:1000]))


@case("cache", "landmarks.npy of another shape")
def _(d, t):
    return _cache_then(d, t, lambda p: np.save(p, np.zeros((3, 971, 2), np.int16)))


@case("cache", "landmarks.npy zero bytes")
def _(d, t):
    return _cache_then(d, t, lambda p: p.write_bytes(b""))


@case("cache", "two processes build one cache at once")
def _(d, t):
    code = (f"from landmarklib.cache import build_cache; import numpy as np; "
            f"c = build_cache({str(d)!r}, 'train', {str(t)!r}, 96, workers=2, progress=False); "
            f"print(int(c.images.reshape(len(c), -1).any(1).sum()))")
    args = [PY, "-c", code]
    env = os.environ | {"TQDM_DISABLE": "1"}
    other = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)

    def both(rc, out, err):
        o_out, o_err = other.communicate(timeout=300)
        return rc == 0 and other.returncode == 0 and out.strip() == o_out.strip() == str(len(load_split(d, "train").names))
    return args, ("check", both)


# --- 5. run-dir side files ----------------------------------------------------------------------------

def _device_json(d: Path, t: Path, content: str) -> tuple:
    assert run(train(d, t))[0] == 0
    (t / "run" / "device.json").write_text(content)
    return train(d, t, "--epochs", "2"), expect_ok(r"device.json: .*kept as device.json.unreadable")


@case("run dir", "device.json empty (half synced)")
def _(d, t):
    return _device_json(d, t, "")


@case("run dir", "device.json holding an object")
def _(d, t):
    return _device_json(d, t, '{"device": "cpu"}')


@case("run dir", "device.json cut mid-list")
def _(d, t):
    return _device_json(d, t, '[{"device": "cpu"')


# --- 6. images ----------------------------------------------------------------------------------------

@case("images", "a 16-bit PNG under a train image's name: training")
def _(d, t):
    p = row_image(d, 7)
    Image.fromarray(np.asarray(Image.open(p).convert("L"), np.uint16) * 257).save(p, "PNG")
    return train(d, t), expect_error(rf"{re.escape(p.name)}: a I;16 image")


@case("images", "a 16-bit PNG under a train image's name: data check")
def _(d, t):
    p = row_image(d, 7)
    Image.fromarray(np.asarray(Image.open(p).convert("L"), np.uint16) * 257).save(p, "PNG")
    return [PY, "-m", "landmarklib.data", "check", "--data-dir", d], expect_error(r"not a JPEG \(PNG, I;16\)")


@case("images", "an image stored on its side with an EXIF orientation: counted")
def _(d, t):
    p = row_image(d, 5)
    im = Image.open(p)
    exif = im.getexif()
    exif[0x0112] = 6   # EXIF orientation: rotate 90 clockwise to display
    im.transpose(Image.Transpose.ROTATE_90).save(p, "JPEG", exif=exif.tobytes())
    return [PY, "-m", "landmarklib.data", "check", "--data-dir", d], expect_ok(r"1 images carry an EXIF orientation")


@case("images", "an image replaced by a half-size copy: data check names it")
def _(d, t):
    p = row_image(d, 9)
    im = Image.open(p)
    im.resize((im.width // 2, im.height // 2)).save(p, "JPEG")
    return [PY, "-m", "landmarklib.data", "check", "--data-dir", d], \
        expect_ok(r"most of their points outside their image, first .*landmarks.csv:11: ")


@case("images", "an image replaced by a half-size copy: the EDA flags it for the blocklist")
def _(d, t):
    p = row_image(d, 9)
    im = Image.open(p)
    im.resize((im.width // 2, im.height // 2)).save(p, "JPEG")
    out = t / "bad.csv"

    def flagged(rc, stdout, err):
        import pandas as pd
        return rc == 0 and bool(pd.read_csv(out).set_index("file_name").loc[p.name, "flagged"])
    return [PY, "-m", "landmarklib.eda", "--data-dir", d, "--out", out, "--no-model"], ("check", flagged)


# --- 7. submissions -----------------------------------------------------------------------------------

def _submission(d: Path, t: Path, edit) -> tuple:
    from landmarklib.csvfiles import read_test_points
    from landmarklib.submission import write_submission
    names, idx = read_test_points(d / "test" / "test_points.csv")
    p = write_submission(t / "sub.csv", names, np.random.default_rng(0).uniform(0, 99, (len(names), 971, 2)), idx)
    lines = p.read_text().splitlines()
    edit(lines)
    p.write_text("\n".join(lines) + "\n")
    return [PY, "-m", "landmarklib.submission", "check", p, "--data-dir", d]


def _cell(lines, value):
    cells = lines[3].split(",")
    cells[5] = value
    lines[3] = ",".join(cells)


@case("submission", "a cell of 1e300")
def _(d, t):
    return _submission(d, t, lambda ls: _cell(ls, "1e300")), expect_error(r"sub.csv:4: column 'Point_M2_X' is 1e\+300")


@case("submission", "a cell of -inf")
def _(d, t):
    return _submission(d, t, lambda ls: _cell(ls, "-inf")), expect_error(r"sub.csv:4: column 'Point_M2_X'")


@case("submission", "a trailing blank line")
def _(d, t):
    return _submission(d, t, lambda ls: ls.append("")), expect_error(r"sub.csv:\d+: blank line")


@case("submission", "a blank line in the middle")
def _(d, t):
    return _submission(d, t, lambda ls: ls.insert(5, "")), expect_error(r"sub.csv:6: blank line")


@case("submission", "scoring a cell of 1e300 against ground truth")
def _(d, t):
    args = _submission(d, t, lambda ls: _cell(ls, "1e300"))
    return [PY, "-m", "landmarklib.score", args[4], "--data-dir", d], expect_error(r"sub.csv:4: column 'Point_M2_X'")


# --- 8. the scripts' contract -------------------------------------------------------------------------

@case("scripts", "PYTHON= an interpreter without the packages")
def _(d, t):
    subprocess.run([PY, "-m", "venv", "--without-pip", str(t / "bare")], check=True)
    before = sorted(map(str, (t / "bare").rglob("*")))
    return ("env", {"PYTHON": str(t / "bare" / "bin" / "python"), "OUT_DIR": str(t / "out")},
            ["bash", ROOT / "run_all.sh"]), \
        ("check", lambda rc, out, err: rc == 2 and err.startswith("error: PYTHON=") and err.count("\n") == 1
         and sorted(map(str, (t / "bare").rglob("*"))) == before)


@case("scripts", "OUT_DIR= a file")
def _(d, t):
    (t / "afile").write_text("")
    return ("env", {"PYTHON": PY, "OUT_DIR": str(t / "afile")}, ["bash", ROOT / "run_all.sh"]), \
        expect_error(r"OUT_DIR=.*afile: cannot make")


@case("scripts", "--device meta")
def _(d, t):
    return train(d, t, "--device", "meta"), expect_error(r"device: 'meta' is not a device to train on")


@case("scripts", "--device cuda:x")
def _(d, t):
    return train(d, t, "--device", "cuda:x"), expect_error(r"device: 'cuda:x' is not a device to train on")


@case("scripts", "LANDMARKLIB_TRACEBACK=1 shows the traceback of a ValueError")
def _(d, t):
    return ("env", {"LANDMARKLIB_TRACEBACK": "1"}, train(d, t, "--device", "meta")), \
        ("check", lambda rc, out, err: rc == 1 and "Traceback (most recent call last)" in err)


# --- earlier rounds: CSV content ------------------------------------------------------------------------

def _csv(d: Path, fn) -> list:
    csv = d / "train" / "landmarks.csv"
    lines = csv.read_bytes().split(b"\n")
    fn(lines)
    csv.write_bytes(b"\n".join(lines))
    return [PY, "-m", "landmarklib.data", "check", "--data-dir", d]


@case("csv", "a non-numeric value")
def _(d, t):
    return _csv(d, lambda ls: ls.__setitem__(4, ls[4].replace(b"\t", b"\tabc\t", 1).rsplit(b"\t", 1)[0])), \
        expect_error(r"landmarks.csv:5: column 'Point_0_X' is 'abc', not a number")


@case("csv", "a duplicate file name")
def _(d, t):
    return _csv(d, lambda ls: ls.__setitem__(6, ls[3])), expect_error(r"landmarks.csv:7: duplicate file_name")


@case("csv", "a row cut short")
def _(d, t):
    return _csv(d, lambda ls: ls.__setitem__(8, ls[8][:200])), expect_error(r"landmarks.csv:9: ")


@case("csv", "a value of 1e30")
def _(d, t):
    return _csv(d, lambda ls: ls.__setitem__(4, ls[4].replace(b"\t", b"\t1e30\t", 1).rsplit(b"\t", 1)[0])), \
        expect_error(r"landmarks.csv:5: point 0 at \(1e\+30")


@case("csv", "a Latin-1 byte")
def _(d, t):
    return _csv(d, lambda ls: ls.__setitem__(5, b"\xe9" + ls[5])), expect_error(r"landmarks.csv:6: byte 0xe9")


# --- round 4 (issue 32) ---------------------------------------------------------------------------

@case("rerun inputs", "another zip for the same data_dir after a finished unpack")
def _(d, t):
    a = zip_of(d, t / "a" / "contest.zip")
    other = make_dataset(t / "other", n_train=40, n_test=10, seed=9, workers=1)
    b = zip_of(other, t / "b" / "contest.zip")
    assert run(unpack(a, t / "unz", t / "scratch"))[0] == 0
    return unpack(b, t / "unz", t / "scratch"), \
        ("check", lambda rc, out, err: rc == 0 and "again" in out + err
         and len(list((t / "unz" / "train" / "images").iterdir())) == 40)


@case("rerun inputs", "wrong test_points_path, then corrected: the rerun uses the corrected file")
def _(d, t):
    z = zip_of(d, t / "zip" / "contest.zip", skip=("SYNTHETIC.json", "test_points.csv"))
    wrong = t / "wrong.csv"
    wrong.write_text("file_name\tpoint_index_0\nx.jpg\t1\n")
    run(unpack(z, t / "unz", t / "scratch", wrong))
    good = d / "test" / "test_points.csv"
    return unpack(z, t / "unz", t / "scratch", good), \
        ("check", lambda rc, out, err: rc == 0 and (t / "unz" / "test" / "test_points.csv").read_bytes()
         == good.read_bytes())


@case("rerun inputs", "test_points_path given while the zip holds its own: the given one wins, said")
def _(d, t):
    z = zip_of(d, t / "contest.zip")
    given = t / "given.csv"
    given.write_bytes((d / "test" / "test_points.csv").read_bytes().replace(b"\n", b"\r\n"))
    return unpack(z, t / "unz", t / "scratch", given), \
        ("check", lambda rc, out, err: rc == 0 and "given.csv" in out + err
         and (t / "unz" / "test" / "test_points.csv").read_bytes() == given.read_bytes())


@case("blocking files", "a train image that is a symlink to a named pipe: data check")
def _(d, t):
    img = row_image(d, 3)
    img.unlink()
    os.mkfifo(t / "pipe")
    img.symlink_to(t / "pipe")
    return ("timeout", 60, [PY, "-m", "landmarklib.data", "check", "--data-dir", d, "--workers", "1"]), \
        expect_error(rf"{img.name}: not a regular file")


@case("blocking files", "a train image that is a named pipe: training")
def _(d, t):
    img = row_image(d, 5)
    img.unlink()
    os.mkfifo(img)
    return ("timeout", 60, train(d, t)), expect_error(rf"{img.name}: not a regular file")


@case("divergence", "training at lr 10 stops, naming epoch, step and LR, keeping no bad checkpoint")
def _(d, t):
    return train(d, t, "--lr", "10", "--max-train-steps", "4", "--epochs", "2"), \
        ("check", lambda rc, out, err: rc == 2 and re.search(r"error: .*diverged at epoch \d+ step \d+ \(lr ", err)
         and not (t / "run" / "best.pt").exists())


@case("divergence", "predict from a diverged checkpoint refuses, naming it")
def _(d, t):
    assert run(train(d, t))[0] == 0
    code = (f"import torch; p = {str(t / 'run' / 'best.pt')!r}; c = torch.load(p, weights_only=True); "
            f"c['model'] = {{k: v * 1e6 if v.is_floating_point() else v for k, v in c['model'].items()}}; "
            f"torch.save(c, p)")
    done = run([PY, "-c", code])
    assert done[0] == 0, done
    return [PY, "-m", "landmarklib.predict", "--data-dir", d, "--checkpoint", t / "run" / "best.pt", "--out",
            t / "sub.csv", "--device", "cpu"], \
        ("check", lambda rc, out, err: rc == 2 and "best.pt" in err and not (t / "sub.csv").exists())


@case("split sizes", "--val-fraction 0.005 on 60 rows")
def _(d, t):
    return train(d, t, "--val-fraction", "0.005"), expect_error(r"val_fraction 0.005 of 60 rows leaves no validation")


@case("split sizes", "--batch-size 64 on 48 training rows")
def _(d, t):
    return train(d, t, "--batch-size", "64"), expect_error(r"fewer than one batch of 64")


@case("side files", "a blocklist whose flagged column says yes/no")
def _(d, t):
    names = load_split(d, "train").names
    (t / "bl.csv").write_text("file_name,flagged\n" + f"{names[0]},yes\n{names[1]},no\n")
    code = f"from landmarklib.csvfiles import read_blocklist; print(sorted(read_blocklist({str(t / 'bl.csv')!r})))"
    return as_cli(code), ("check", lambda rc, out, err: rc == 0 and out.strip() == str([str(names[0])]))


@case("side files", "a blocklist whose flagged column says 'maybe'")
def _(d, t):
    (t / "bl.csv").write_text("file_name,flagged\na.jpg,true\nb.jpg,maybe\n")
    return as_cli(f"from landmarklib.csvfiles import read_blocklist; read_blocklist({str(t / 'bl.csv')!r})"), \
        expect_error(r"bl.csv:3: flagged is 'maybe'")


@case("weights", "a malicious pickle as --weights-path")
def _(d, t):
    code = (f"import pickle, os\nclass E:\n    def __reduce__(self): return (os.system, ('touch {t / 'owned'}',))\n"
            f"open({str(t / 'evil.pt')!r}, 'wb').write(pickle.dumps(E()))")
    subprocess.run([PY, "-c", code], check=True)
    return train(d, t, "--weights-path", t / "evil.pt"), \
        ("check", lambda rc, out, err: rc == 2 and "evil.pt" in err and not (t / "owned").exists()
         and len(err.strip().splitlines()) == 1)


def _patch_member(z: Path, member: str, flags: int | None = None, method: int | None = None) -> Path:
    """Set a member's flag bits or compression method in both its local and central headers (what
    zipfile cannot write: an encrypted member, Deflate64)."""
    raw = bytearray(z.read_bytes())
    for sig, flag_at, method_at, name_len_at, name_at in ((b"PK\x03\x04", 6, 8, 26, 30), (b"PK\x01\x02", 8, 10, 28, 46)):
        i = raw.find(sig)
        while i != -1:
            n = int.from_bytes(raw[i + name_len_at:i + name_len_at + 2], "little")
            if raw[i + name_at:i + name_at + n] == member.encode():
                for at, value in ((flag_at, flags), (method_at, method)):
                    if value is not None:
                        raw[i + at:i + at + 2] = value.to_bytes(2, "little")
            i = raw.find(sig, i + 4)
    z.write_bytes(bytes(raw))
    return z


@case("zip formats", "a member that is a symlink to a folder outside, then a file through it")
def _(d, t):
    z = zip_of(d, t / "link.zip")
    with zipfile.ZipFile(z, "a") as zf:
        info = zipfile.ZipInfo("DATA/escape")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, str(t / "outside"))
        zf.writestr("DATA/escape/owned.txt", "x")
    return unpack(z, t / "unz", t / "scratch"), \
        ("check", lambda rc, out, err: rc == 2 and "is a symbolic link" in err and not (t / "outside").exists()
         and "Traceback" not in err)


@case("zip formats", "an encrypted zip")
def _(d, t):
    z = _patch_member(zip_of(d, t / "enc.zip"), "DATA/train/landmarks.csv", flags=0x1)
    return unpack(z, t / "unz", t / "scratch"), expect_error(r"enc.zip: member 'DATA/train/landmarks.csv' is encrypted")


@case("zip formats", "a member compressed with Deflate64 (Windows Explorer)")
def _(d, t):
    z = _patch_member(zip_of(d, t / "win.zip"), "DATA/train/landmarks.csv", method=9)
    return unpack(z, t / "unz", t / "scratch"), expect_error(r"win.zip: member .* is compressed with Deflate64")


@case("zip formats", "names written with backslashes (an old Windows tool)")
def _(d, t):
    z = zip_of(d, t / "bs.zip", sep="\\")
    return as_cli(f"from landmarklib.unpack import unpack_contest; from landmarklib.data import check; "
                  f"unpack_contest({str(z)!r}, {str(t / 'unz')!r}, scratch={str(t / 'scratch')!r}); "
                  f"print(check({str(t / 'unz')!r}, workers=1)['train']['images'])"), ("check", lambda rc, out, err: rc == 0 and out.strip() == "60")


@case("csv names", "a file_name that begins with a quote")
def _(d, t):
    csv = d / "train" / "landmarks.csv"
    lines = csv.read_text().split("\n")
    old = lines[4].split("\t", 1)[0]
    (d / "train" / "images" / old).rename(d / "train" / "images" / ('"' + old))
    lines[4] = '"' + lines[4]
    csv.write_text("\n".join(lines))
    return [PY, "-m", "landmarklib.data", "check", "--data-dir", d, "--workers", "1"], expect_ok("layout OK")


@case("csv names", "NFC in the CSV, NFD on disk (copied from a Mac)")
def _(d, t):
    import unicodedata
    csv = d / "train" / "landmarks.csv"
    lines = csv.read_text().split("\n")
    old = lines[6].split("\t", 1)[0]
    (d / "train" / "images" / old).rename(d / "train" / "images" / unicodedata.normalize("NFD", "café.jpg"))
    lines[6] = unicodedata.normalize("NFC", "café.jpg") + lines[6][len(old):]
    csv.write_text("\n".join(lines))
    return [PY, "-m", "landmarklib.data", "check", "--data-dir", d, "--workers", "1"], \
        expect_error(r"landmarks.csv:7: image 'café.jpg' is on disk as .*another Unicode normalization")


def _small_disk(folder_part: str, free: int, call: str) -> list:
    """`call` with shutil.disk_usage reporting `free` bytes for paths holding `folder_part` (a full TMPDIR,
    a small cache disk), as a CLI runs it."""
    return as_cli("import shutil; real = shutil.disk_usage; shutil.disk_usage = lambda p: real(p)._replace(free="
                  f"{free}) if {folder_part!r} in str(p) else real(p)\n    {call}")


@case("disk", "a full TMPDIR during the zip's scratch copy, then room: the rerun unpacks whole")
def _(d, t):
    z = zip_of(d, t / "drive" / "contest.zip")
    call = (f"from landmarklib.unpack import unpack_contest; unpack_contest({str(z)!r}, {str(t / 'unz')!r}, "
            f"scratch={str(t / 'scratch')!r})")
    rc, _, err = run(_small_disk("scratch", 1000, call))
    assert rc == 2 and "scratch: copying contest.zip needs" in err and "free there" in err, err
    return as_cli(call + f"; from landmarklib.data import check; print(check({str(t / 'unz')!r}, workers=1)"
                         f"['train']['images'])"), ("check", lambda rc, out, err: rc == 0 and out.strip() == "60")


@case("disk", "a cache dir on a disk too small for the cache, then room: the rerun builds it whole")
def _(d, t):
    call = (f"from landmarklib.cache import build_cache; import numpy as np; c = build_cache({str(d)!r}, 'train', "
            f"{str(t / 'smallcache')!r}, 64, workers=1, progress=False); print(int(np.asarray(c.images).any(axis=(1, 2, 3)).sum()))")
    rc, _, err = run(_small_disk("smallcache", 1000, call))
    assert rc == 2 and "the cache needs" in err and "free there" in err, err
    return as_cli(call), ("check", lambda rc, out, err: rc == 0 and out.strip() == "60")


@case("disk", "TMPDIR filling up during the scratch copy (after the check passed), then room")
def _(d, t):
    z = zip_of(d, t / "drive" / "contest.zip")
    call = (f"from landmarklib.unpack import unpack_contest; unpack_contest({str(z)!r}, {str(t / 'unz')!r}, "
            f"scratch={str(t / 'scratch')!r})")
    full = as_cli("import errno, shutil\n    def copy2(src, dst):\n        open(dst, 'wb').write(b'x' * 100)\n"
                  "        raise OSError(errno.ENOSPC, 'No space left on device', str(dst))\n"
                  f"    shutil.copy2 = copy2\n    {call}")
    rc, _, err = run(full)
    assert rc == 2 and "no space left on the device" in err and len(err.strip().splitlines()) == 1, err
    assert not any((t / "scratch").iterdir()), list((t / "scratch").iterdir())   # no half copy to trust
    return as_cli(call + f"; from landmarklib.data import check; print(check({str(t / 'unz')!r}, workers=1)"
                         f"['train']['images'])"), ("check", lambda rc, out, err: rc == 0 and out.strip() == "60")


def classify(expect, rc, out, err) -> str:
    if rc is None:
        return "bad (hang)"
    kind, what = expect
    if kind == "check":
        ok = what(rc, out, err)
        return "good" if ok else ("weak (traceback)" if "Traceback" in err else "bad")
    if kind == "ok":
        if rc != 0:
            return "weak (traceback)" if "Traceback" in err else "bad (refused)"
        return "good" if re.search(what, out + err) else "weak (no line saying so)"
    if rc == 0:
        return "bad (accepted)"
    if "Traceback" in err:
        return "weak (traceback)"
    lines = [ln for ln in err.strip().splitlines() if not BAR.search(ln)]   # progress bars are not messages
    if rc != 2 or len(lines) != 1 or not lines[0].startswith("error: "):
        return f"weak (exit {rc}, {len(lines)} lines)"
    return "good" if re.search(what, err) else "weak (message)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", default=[""], help="run the cases whose 'kind: name' holds one of these")
    a = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="lmprobe_"))
    counts: dict[str, int] = {}
    try:
        demo = make_dataset(base / "demo", n_train=60, n_test=20, seed=1, bad_fraction=5 / 60, workers=1)
        for i, (kind, name, setup) in enumerate(CASES):
            if not any(o in f"{kind}: {name}" for o in a.only):
                continue
            t = base / f"case{i}"
            d = t / "data"
            shutil.copytree(demo, d)
            try:
                spec, expect = setup(d, t)
            except Exception as e:   # noqa: BLE001 (a probe case that could not be set up is reported as such)
                print(f"  setup failed  {kind}: {name}: {type(e).__name__}: {e}")
                counts["setup failed"] = counts.get("setup failed", 0) + 1
                continue
            env, cwd, args = None, ROOT, spec
            if isinstance(spec, tuple) and spec[0] == "env":
                env, args = spec[1], spec[2]
            elif isinstance(spec, tuple) and spec[0] == "cwd":
                cwd, args = spec[1], spec[2]
            timeout = 300
            if isinstance(spec, tuple) and spec[0] == "timeout":   # a case that may hang: shorter wait
                timeout, args = spec[1], spec[2]
            rc, out, err = run(args, env, cwd, timeout)
            outcome = classify(expect, rc, out, err)
            counts[outcome.split()[0]] = counts.get(outcome.split()[0], 0) + 1
            shown = (err.strip().splitlines() or out.strip().splitlines() or [""])[-1][:150]
            print(f"{outcome:<26} {kind}: {name}\n{'':<27}exit {rc}: {shown}")
            shutil.rmtree(t, ignore_errors=True)
        print(f"\n{sum(counts.values())} cases: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
        only = [shlex.quote(o) for o in a.only if o]
        print("command: python bench/probe_faults.py" + (" --only " + " ".join(only) if only else ""))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
