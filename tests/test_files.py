"""Tests for bldgseg.files: atomic replacement and the "output exists" refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from bldgseg.errors import InputError, OutputExistsError
from bldgseg.files import (
    atomic_replace,
    atomic_write,
    hidden_temp_path,
    refuse_existing,
    refuse_existing_any,
    require_gpkg,
)


def test_refuse_existing_messages(tmp_path: Path) -> None:
    out = tmp_path / "out.gpkg"
    refuse_existing(out, overwrite=False)  # absent: fine
    out.write_text("x")
    with pytest.raises(OutputExistsError, match=r"out\.gpkg: already exists; pass --overwrite to replace it"):
        refuse_existing(out, overwrite=False, label=out.name)
    with pytest.raises(OutputExistsError, match=rf"^{tmp_path}/out\.gpkg: already exists; see"):
        refuse_existing(out, overwrite=False, hint="see")
    refuse_existing(out, overwrite=True)
    with pytest.raises(OutputExistsError, match="is a folder; choose a file name with -o"):
        refuse_existing(tmp_path, overwrite=True, file=True)
    with pytest.raises(OutputExistsError, match=r"out\.gpkg: already exists \(1 in all\); pass --overwrite or"):
        refuse_existing_any([tmp_path / "a.gpkg", out], overwrite=False, count=True)
    with pytest.raises(InputError, match=r"use e\.g\. -o street\.gpkg"):
        require_gpkg(tmp_path / "out.shp", "street.gpkg")


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    dest = tmp_path / "a.txt"
    assert atomic_replace(dest, lambda tmp: tmp.write_text("one")) == dest
    with pytest.raises(RuntimeError), atomic_write(dest, ".txt", sidecars=("-journal",)) as tmp:
        tmp.write_text("half")
        tmp.with_name(tmp.name + "-journal").write_text("j")
        raise RuntimeError("interrupted")
    assert dest.read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_write_without_overwrite_never_clobbers(tmp_path: Path) -> None:
    dest = tmp_path / "a.txt"
    with pytest.raises(OutputExistsError), atomic_write(dest, overwrite=False) as tmp:
        tmp.write_text("mine")
        dest.write_text("appeared meanwhile")
    assert dest.read_text() == "appeared meanwhile"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path: Path) -> None:
    import subprocess
    import sys

    dest = tmp_path / "out.gpkg"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.gpkg.{int(gone.stdout)}.0badf00d.tmp.gpkg"  # a writer killed with -9
    stale.write_bytes(b"half a geopackage")
    journal = stale.with_name(stale.name + "-journal")
    journal.write_bytes(b"j")
    live = hidden_temp_path(dest, ".gpkg")  # this process's: being written, kept
    live.write_bytes(b"busy")
    other = tmp_path / ".other.gpkg.1.0badf00d.tmp.gpkg"  # another output's
    other.write_bytes(b"x")
    atomic_replace(dest, lambda tmp: tmp.write_bytes(b"new"), ".gpkg")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "out.gpkg"])
