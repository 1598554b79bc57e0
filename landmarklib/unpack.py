"""The contest zip onto local disk: unpacked once into data_dir (train/, test/), resumed when cut off,
unpacked again when the zip or the test points change."""
from __future__ import annotations

import json
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path

from .atomic import atomic_path, check_free_space
from .data import file_digest, is_synthetic
from .errors import DataError
from .progress import bar

UNPACKED_MARKER = ".unpacked"   # written last by unpack_contest: its presence means the unpack finished


def unpack_contest(zip_path: Path | str, data_dir: Path | str, test_points: Path | str | None = None,
                   scratch: Path | str | None = None) -> Path:
    """Unpack the contest zip into data_dir (train/, test/), once.

    The zip is first copied whole to local scratch (reading many small files from Google
    Drive is very slow, one large file is fast), then unpacked and the copy removed, whether the
    unpack succeeded or not (on Colab it is 13.5 GB of the local disk). A marker file written last,
    after test_points.csv is in place, says the unpack finished: an interrupted one is resumed (files
    already there with the right size are kept, when the interrupted one was of the same zip). Members
    that would land outside data_dir (absolute paths, '..') are refused, and so is a zip holding two
    data sets. A data_dir holding the synthetic demo set has it replaced (said in one line): the two
    are never mixed. The 2020 archive shipped test_points.csv separately: pass it, or leave it next to
    the zip, and it is put into data_dir/test/; a given one wins over the zip's own (said).
    The marker records the sources (the zip's path, size and mtime; the test points' SHA-256): a rerun
    with another zip unpacks it again in place of the old data, and one with other test points puts
    them in, each said in one line.
    """
    zip_path, data_dir = Path(zip_path), Path(data_dir)
    if not zip_path.is_file():
        raise DataError(f"{zip_path}: contest zip not found")
    given = Path(test_points) if test_points else None
    if given is not None and not given.is_file():
        raise DataError(f"{given}: test_points.csv not found (test_points_path)")
    dest = data_dir / "test" / "test_points.csv"
    marker = data_dir / UNPACKED_MARKER
    zip_id = _zip_identity(zip_path)
    done = _read_marker(marker)
    if done is not None:
        if done.get("zip") in (None, zip_id):   # None: a marker of an older landmarklib
            digest = file_digest(given) if given is not None else None
            if digest is not None and done.get("test_points") != digest:
                put_test_points(given, dest, f"using {given}, not the test_points.csv it held (test_points_path "
                                              f"changed since the unpack)")
                marker.write_text(json.dumps(done | {"test_points": digest}) + "\n")
            return data_dir
        print(f"{data_dir}: unpacked from {done['zip']['path']} before; unpacking {zip_path} again into it "
              f"(the old data replaced, never mixed)")
        marker.unlink()
        _remove(data_dir, ("train", "test"))
    source = given or zip_path.parent / "test_points.csv"
    started = data_dir / ".unpacking"   # which zip an unfinished unpack was of: another's files are not kept
    if started.is_file() and started.read_text().strip() != json.dumps(zip_id):
        print(f"{data_dir}: an unfinished unpack of another zip is there; unpacking {zip_path} in its place")
        _remove(data_dir, ("train", "test"))
    if is_synthetic(data_dir):
        print(f"{data_dir}: replacing the synthetic demo set there with the contest data from {zip_path.name}")
        _remove(data_dir, ("train", "test", "SYNTHETIC.json"))
    local = Path(scratch or tempfile.gettempdir()) / zip_path.name
    is_copy = local.resolve() != zip_path.resolve()
    try:
        if is_copy:
            _copy_to_scratch(zip_path, local)
        try:
            with zipfile.ZipFile(local) as zf:
                in_zip = "test/test_points.csv" in _extract(zf, zip_path, data_dir, started, zip_id)
        except (zipfile.BadZipFile, EOFError, zlib.error) as e:
            raise DataError(f"{zip_path}: not a readable zip file ({e}); download it again") from None
    finally:
        if is_copy:
            local.unlink(missing_ok=True)
    if given is not None or not in_zip:   # a given file wins over the zip's own, and says so
        if not source.is_file():
            raise DataError(f"{dest}: missing, and no test_points.csv given or found next to {zip_path}")
        put_test_points(source, dest, f"using {source}, not the test_points.csv inside {zip_path.name} (a given "
                                        f"file wins)" if in_zip else None)
    identity = {"zip": zip_id, "test_points": "in the zip" if given is None and in_zip else file_digest(source)}
    marker.write_text(json.dumps(identity) + "\n")   # last: the unpack is whole from here on
    started.unlink(missing_ok=True)
    return data_dir


def _zip_identity(zip_path: Path) -> dict:
    """Which zip data_dir came from: its path, size and mtime (hashing 13.5 GB on Drive each run is too
    slow; a zip downloaded again has a new mtime, and is unpacked again)."""
    st = zip_path.stat()
    return {"path": str(zip_path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _remove(data_dir: Path, parts: tuple[str, ...]) -> None:
    """data_dir's parts (folders or files) gone, where they are."""
    for part in parts:
        shutil.rmtree(data_dir / part) if (data_dir / part).is_dir() else (data_dir / part).unlink(missing_ok=True)


def _read_marker(marker: Path) -> dict | None:
    """The sources an unpack came from (None: no finished unpack); {} for an older marker (the zip's
    name only), which is trusted as it was."""
    if not marker.is_file():
        return None
    try:
        done = json.loads(marker.read_text())
    except ValueError:
        return {}
    return done if isinstance(done, dict) else {}


def put_test_points(source: Path, dest: Path, said: str | None) -> None:
    """`source` copied to `dest` (atomically), and `said` printed in one line when given."""
    if said:
        print(f"{dest}: {said}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        shutil.copyfile(source, tmp)


def _copy_to_scratch(zip_path: Path, local: Path) -> None:
    """The zip copied whole to local disk, with its mtime: a copy is trusted only while both the size
    and the mtime match (a re-downloaded zip of the same size is copied again)."""
    st = zip_path.stat()
    kept = local.stat() if local.is_file() else None
    if kept is not None and (kept.st_size, kept.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
        return
    local.parent.mkdir(parents=True, exist_ok=True)
    local.unlink(missing_ok=True)
    check_free_space(local.parent, st.st_size, f"copying {zip_path.name}")
    with atomic_path(local) as tmp:
        shutil.copy2(zip_path, tmp)


def _extract(zf, zip_path: Path, data_dir: Path, started: Path, zip_id: dict) -> list[str]:
    """The data set's members written into data_dir (files already there whole are kept), once every
    target is known to lie inside it; `started` records which zip (`zip_id`), first. Returns the
    members' names relative to data_dir."""
    name = {i.filename: i.filename.replace("\\", "/") for i in zf.infolist()}   # old Windows tools: a\b is a/b
    csvs = [n for n in name.values() if n == "train/landmarks.csv" or n.endswith("/train/landmarks.csv")]
    if not csvs:
        raise DataError(f"{zip_path}: no train/landmarks.csv inside the zip")
    if len(csvs) > 1:
        raise DataError(f"{zip_path}: holds {len(csvs)} data sets ({', '.join(csvs[:3])}); unpack the one you "
                        f"mean by hand, or make a zip holding one")
    prefix = csvs[0][: -len("train/landmarks.csv")]
    members = [i for i in zf.infolist() if name[i.filename].startswith(prefix) and not name[i.filename].endswith("/")]
    rel = {i.filename: name[i.filename][len(prefix):] for i in members}
    root = data_dir.resolve()
    for info in members:   # every member checked before anything is written
        _check_member(info, zip_path)
        target = (data_dir / rel[info.filename]).resolve()
        if name[info.filename].startswith("/") or ".." in Path(name[info.filename]).parts or root not in target.parents:
            raise DataError(f"{zip_path}: member {info.filename!r} would be written outside {data_dir}; "
                            f"refusing to unpack this zip")
    data_dir.mkdir(parents=True, exist_ok=True)
    todo = [i for i in members if not _unpacked(data_dir / rel[i.filename], i.file_size)]
    check_free_space(data_dir, sum(i.file_size for i in todo), f"unpacking {zip_path.name}")
    started.write_text(json.dumps(zip_id) + "\n")
    for info in bar(todo, desc="unzip", unit="file"):   # files already there whole: from an interrupted unpack
        target = data_dir / rel[info.filename]
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, atomic_path(target) as tmp, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return list(rel.values())


ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}   # what zipfile reads
DEFLATE64 = 9


def _check_member(info: zipfile.ZipInfo, zip_path: Path) -> None:
    """A member this unpack can write as a plain file, or one line on what it is and what to do."""
    what = None
    if stat.S_ISLNK(info.external_attr >> 16):
        what = "is a symbolic link (the contest's zip holds none; a link could point outside data_dir)"
    elif info.flag_bits & 0x1:
        what = "is encrypted; unpack the zip with its password yourself and give data_dir"
    elif info.compress_type == DEFLATE64:
        what = ("is compressed with Deflate64 (Windows Explorer's zip of large files), which Python cannot read; "
                "unpack it with 7-Zip or unzip and give data_dir, or zip it again with another tool")
    elif info.compress_type not in ZIP_METHODS:
        what = (f"uses compression method {info.compress_type}, which Python cannot read; unpack it with 7-Zip and "
                f"give data_dir")
    if what:
        raise DataError(f"{zip_path}: member {info.filename!r} {what}; nothing unpacked")


def _unpacked(target: Path, size: int) -> bool:
    return target.is_file() and target.stat().st_size == size
