"""unpack.py: the contest zip onto disk, once; resumed, replaced, refused."""
import shutil
import zipfile

import pytest

from conftest import zip_of
from landmarklib import data
from landmarklib.data import check
from landmarklib.errors import DataError
from landmarklib.notebook import ensure_data
from landmarklib.unpack import unpack_contest


def test_unpack_contest_zip_with_separate_test_points(synth_dir, tmp_path):
    """The 2020 layout: a zip with a top folder, test_points.csv shipped beside it."""
    zpath = zip_of(synth_dir, tmp_path / "drive" / "contest.zip", skip=("test_points.csv",))
    (tmp_path / "drive" / "test_points.csv").write_bytes((synth_dir / "test" / "test_points.csv").read_bytes())
    out = unpack_contest(zpath, tmp_path / "data", scratch=tmp_path)
    assert check(out, workers=1)["train"]["images"] == 60
    with pytest.raises(DataError, match="no train/landmarks.csv inside the zip"):
        bad = tmp_path / "empty.zip"
        zipfile.ZipFile(bad, "w").close()
        unpack_contest(bad, tmp_path / "other")


def test_a_rerun_with_another_zip_unpacks_it_in_place_of_the_old_data(synth_dir, tmp_path, capsys):
    from landmarklib.data import load_split
    from landmarklib.synth import make_dataset
    a = zip_of(synth_dir, tmp_path / "a" / "contest.zip")
    b = zip_of(make_dataset(tmp_path / "other", n_train=40, n_test=10, seed=9, workers=1), tmp_path / "b" / "contest.zip")
    d = tmp_path / "data"
    unpack_contest(a, d, scratch=tmp_path / "s")
    unpack_contest(a, d, scratch=tmp_path / "s")                     # the same zip: nothing to do, nothing said
    assert "again" not in capsys.readouterr().out
    unpack_contest(b, d, scratch=tmp_path / "s")
    assert f"unpacked from {a.resolve()} before; unpacking {b} again" in capsys.readouterr().out
    assert len(load_split(d, "train").names) == 40 and len(list((d / "train" / "images").iterdir())) == 40


def test_an_unfinished_unpack_of_another_zip_is_not_mixed_in(synth_dir, tmp_path, capsys):
    import json
    a = zip_of(synth_dir, tmp_path / "a" / "contest.zip")
    d = tmp_path / "data"
    (d / "train" / "images").mkdir(parents=True)
    (d / "train" / "images" / "stale.jpg").write_bytes(b"x")           # what the other zip's unpack left
    (d / ".unpacking").write_text(json.dumps({"path": "/elsewhere/other.zip", "size": 1, "mtime_ns": 1}))
    unpack_contest(a, d, scratch=tmp_path / "s")
    assert "an unfinished unpack of another zip" in capsys.readouterr().out
    assert not (d / "train" / "images" / "stale.jpg").exists() and not (d / ".unpacking").exists()


def test_given_test_points_win_over_the_zips_own_and_a_corrected_file_is_taken_on_a_rerun(synth_dir, tmp_path,
                                                                                          capsys):
    z = zip_of(synth_dir, tmp_path / "contest.zip")
    own = (synth_dir / "test" / "test_points.csv").read_bytes()
    given = tmp_path / "given.csv"
    given.write_bytes(own.replace(b"\n", b"\r\n"))                   # the same points, another file
    d = tmp_path / "data"
    unpack_contest(z, d, given, scratch=tmp_path / "s")
    assert f"using {given}, not the test_points.csv inside contest.zip" in capsys.readouterr().out
    assert (d / "test" / "test_points.csv").read_bytes() == given.read_bytes()
    corrected = tmp_path / "corrected.csv"
    corrected.write_bytes(own)
    unpack_contest(z, d, corrected, scratch=tmp_path / "s")
    assert f"using {corrected}, not the test_points.csv it held" in capsys.readouterr().out
    assert (d / "test" / "test_points.csv").read_bytes() == own
    with pytest.raises(DataError, match=r"nowhere.csv: test_points.csv not found"):
        unpack_contest(z, d, tmp_path / "nowhere.csv", scratch=tmp_path / "s")


def test_zip_members_of_the_kinds_windows_and_attackers_write(synth_dir, tmp_path):
    """Backslash separators are folders; a symbolic link, an encrypted member, Deflate64 (Windows
    Explorer's large zips) or another method zipfile cannot read is one line naming it, nothing unpacked."""
    from landmarklib.data import load_split
    from landmarklib.unpack import _check_member, unpack_contest
    z = zip_of(synth_dir, tmp_path / "win.zip", sep="\\")
    assert len(load_split(unpack_contest(z, tmp_path / "data", scratch=tmp_path / "s"), "train").names) == 60
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        zf.writestr("DATA/train/landmarks.csv", "x")
        info = zipfile.ZipInfo("DATA/train/images")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc")
    with pytest.raises(DataError, match=r"link.zip: member 'DATA/train/images' is a symbolic link.*; nothing unpacked"):
        unpack_contest(link, tmp_path / "d2", scratch=tmp_path / "s")
    assert not (tmp_path / "d2").exists()
    for field, value, said in (("flag_bits", 0x1, "is encrypted"), ("compress_type", 9, "is compressed with Deflate64"),
                               ("compress_type", 99, "uses compression method 99")):
        info = zipfile.ZipInfo("DATA/train/x.jpg")
        setattr(info, field, value)
        with pytest.raises(DataError, match=rf"c.zip: member 'DATA/train/x.jpg' {said}"):
            _check_member(info, tmp_path / "c.zip")


def test_zip_slip_members_are_refused_before_anything_is_written(tmp_path):
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("DATA/train/landmarks.csv", "x")
        zf.writestr("DATA/../../escaped.txt", "owned")
    with pytest.raises(DataError, match=r"evil.zip: member 'DATA/../../escaped.txt' would be written outside"):
        unpack_contest(z, tmp_path / "data", scratch=tmp_path / "scratch")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "data").exists()


def test_a_killed_unpack_is_resumed_and_a_bad_zip_is_named(synth_dir, tmp_path, monkeypatch):
    z = zip_of(synth_dir, tmp_path / "drive" / "contest.zip", skip=())
    data = tmp_path / "data"
    real = shutil.copyfileobj
    calls = []

    def killed(src, dst, *a):
        calls.append(1)
        if len(calls) == 30:
            raise KeyboardInterrupt("killed mid-unpack")
        return real(src, dst, *a)
    monkeypatch.setattr(shutil, "copyfileobj", killed)
    with pytest.raises(KeyboardInterrupt):
        unpack_contest(z, data, scratch=tmp_path / "scratch")
    monkeypatch.setattr(shutil, "copyfileobj", real)
    written = [p for p in data.rglob("*") if p.is_file()]
    assert 0 < len(written) < 80 + 2 and not (data / ".unpacked").exists()    # part of the 84 files
    unpack_contest(z, data, scratch=tmp_path / "scratch")   # the marker, not landmarks.csv, says it is unfinished
    assert (data / ".unpacked").is_file() and not (tmp_path / "scratch" / "contest.zip").exists()
    assert ensure_data(data, z) == data                      # finished: nothing to do
    assert sorted(p.name for p in (data / "train" / "images").iterdir()) == \
        sorted(p.name for p in (synth_dir / "train" / "images").iterdir())
    bad = tmp_path / "truncated.zip"
    bad.write_bytes(z.read_bytes()[: z.stat().st_size // 2])
    with pytest.raises(DataError, match=r"truncated.zip: not a readable zip file"):
        unpack_contest(bad, tmp_path / "other", scratch=tmp_path / "s2")


def test_unpacking_stops_before_a_full_disk_and_footprint_adds_up(synth_dir, tmp_path, monkeypatch):
    import landmarklib.atomic as atomic_mod
    import landmarklib.data as data_mod
    z = zip_of(synth_dir, tmp_path / "drive" / "contest.zip", skip=())
    real = shutil.disk_usage
    monkeypatch.setattr(atomic_mod.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(DataError, match=r"scratch: copying contest.zip needs 0.00 GiB, 0.00 GiB free there"):
        unpack_contest(z, tmp_path / "data", scratch=tmp_path / "scratch")
    assert not (tmp_path / "data").exists()
    monkeypatch.setattr(atomic_mod.shutil, "disk_usage", lambda p: real(p)._replace(
        free=z.stat().st_size + 10 if "scratch" in str(p) else 1000))
    with pytest.raises(DataError, match=r"data: unpacking contest.zip needs .* GiB free there"):
        unpack_contest(z, tmp_path / "data", scratch=tmp_path / "scratch")
    assert not any(p.is_file() for p in (tmp_path / "data").rglob("*"))
    monkeypatch.undo()
    data = unpack_contest(z, tmp_path / "data", scratch=tmp_path / "scratch")
    sizes = data_mod.footprint(data)
    images = sum(p.stat().st_size for p in (data / "train" / "images").iterdir())
    assert sizes["train/images"] == images and sizes["test/images"] > 0 and sizes["csv files"] > 0


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
