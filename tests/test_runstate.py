"""Run directories: part files, manifest, resume, atomic merge (in-process, local threads)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
import pytest
from rasterio.transform import from_origin
from shapely.geometry import box

from bldgseg.errors import InputError, OutputExistsError
from bldgseg.pipeline import BUILDING_COLUMNS, RunConfig, empty_buildings, run
from bldgseg.runstate import (
    MANIFEST,
    RunDir,
    UnitRecord,
    merge_buildings,
    read_part,
    write_error_part,
    write_part,
)
from tests.conftest import REPO, scene, write_rgb

#: ``tests/merge_pause_preload.py``'s variable (not imported here: importing it patches the merge).
PAUSED_ENV = "BLDGSEG_TEST_MERGE_PAUSED"

BOXES = [(r, c, r + 20, c + 30) for r in range(10, 236, 70) for c in range(15, 226, 80)]


def config(tmp_path: Path, model: Path, inputs: list[Path], **kw) -> RunConfig:
    kw.setdefault("simplify_m", 0.0)
    kw.setdefault("min_area_m2", 0.0)
    kw.setdefault("chunk_size", 64)
    kw.setdefault("max_building_size_m", 10.0)
    return RunConfig(inputs=inputs, output=tmp_path / "out.gpkg", model=str(model), device="cpu", **kw)


def parts(run_dir: Path) -> dict[str, tuple[int, int]]:
    return {
        p.name: (p.stat().st_mtime_ns, p.stat().st_ino)
        for p in (run_dir / "parts").glob("*.gpkg")
        if not p.name.startswith(".")
    }


def buildings_of(path: Path) -> pd.DataFrame:
    gdf = pyogrio.read_dataframe(path, layer="buildings")
    return gdf.drop(columns="geometry").assign(wkt=gdf.geometry.to_wkt(rounding_precision=3))


@pytest.fixture
def image(tmp_path):
    return write_rgb(tmp_path / "a.tif", scene(256, 256, BOXES))


def test_resume_skips_finished_units_and_gives_the_same_result(tmp_path, red_roof_model, image):
    run_dir = tmp_path / "rd"
    first = run(config(tmp_path, red_roof_model, [image], run_dir=run_dir))
    assert first.metadata["units"] == 16 and len(first.buildings) == len(BOXES)
    reference = buildings_of(tmp_path / "out.gpkg")
    manifest = json.loads((run_dir / MANIFEST).read_text())
    assert len(manifest["units"]) == 16 and manifest["sessions"][0]["units_done_before"] == 0

    # as if the client had died: the output never written, 6 units never finished
    (tmp_path / "out.gpkg").unlink()
    before = parts(run_dir)
    lost = sorted(before)[:6]
    for name in lost:
        (run_dir / "parts" / name).unlink()
    (run_dir / "parts" / ".half-written.123.abcd.tmp.gpkg").write_bytes(b"partial")
    kept = {k: v for k, v in before.items() if k not in lost}

    second = run(config(tmp_path, red_roof_model, [image], run_dir=run_dir, resume=True))
    after = parts(run_dir)
    assert set(after) == set(before)
    assert all(after[name] == stamp for name, stamp in kept.items())  # finished units not redone
    assert not list((run_dir / "parts").glob(".*"))  # half-written leftovers cleaned
    session = json.loads((run_dir / MANIFEST).read_text())["sessions"][-1]
    assert session["units_done_before"] == 10 and session["units_submitted"] == 6
    assert second.metadata["units_resumed"] == 10
    pd.testing.assert_frame_equal(buildings_of(tmp_path / "out.gpkg"), reference)


def test_a_run_directory_holding_a_run_is_not_reused_silently(tmp_path, red_roof_model, image):
    run_dir = tmp_path / "rd"
    run(config(tmp_path, red_roof_model, [image], run_dir=run_dir))
    (tmp_path / "out.gpkg").unlink()
    with pytest.raises(OutputExistsError, match="--resume"):
        run(config(tmp_path, red_roof_model, [image], run_dir=run_dir))
    result = run(config(tmp_path, red_roof_model, [image], run_dir=run_dir, overwrite=True))  # start again
    assert result.metadata["units_resumed"] == 0 and len(result.buildings) == len(BOXES)


def test_resume_with_other_options_is_refused(tmp_path, red_roof_model, image):
    run_dir = tmp_path / "rd"
    run(config(tmp_path, red_roof_model, [image], run_dir=run_dir))
    (tmp_path / "out.gpkg").unlink()
    with pytest.raises(InputError, match="min_area_m2"):
        run(config(tmp_path, red_roof_model, [image], run_dir=run_dir, resume=True, min_area_m2=5.0))
    with pytest.raises(InputError, match="no run to resume"):
        run(config(tmp_path, red_roof_model, [image], run_dir=tmp_path / "nothing", resume=True))


def test_default_run_directory_is_hidden_and_removed_after_success(tmp_path, red_roof_model, image):
    run(config(tmp_path, red_roof_model, [image]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "models", "out.gpkg"]


def test_an_interrupted_default_run_asks_for_resume(tmp_path, red_roof_model, image):
    hidden = tmp_path / ".out.gpkg.run"
    run(config(tmp_path, red_roof_model, [image], run_dir=tmp_path / "rd"))
    (tmp_path / "rd").rename(hidden)  # as if a default run had died just before writing its output
    (tmp_path / "out.gpkg").unlink()
    with pytest.raises(OutputExistsError, match=r"--resume .*\.out\.gpkg\.run"):
        run(config(tmp_path, red_roof_model, [image]))
    result = run(config(tmp_path, red_roof_model, [image], run_dir=hidden, resume=True))
    assert result.metadata["units_resumed"] == 16 and len(result.buildings) == len(BOXES)
    assert not hidden.exists()  # the default run directory goes once the run is complete


def test_failed_unit_goes_to_errors_and_is_retried_on_resume(tmp_path, red_roof_model, image, monkeypatch):
    import bldgseg.pipeline.unit as pipeline

    real = pipeline.process_unit

    def flaky(unit, settings):
        if unit.index == 5:
            raise OSError("disk hiccup")
        return real(unit, settings)

    monkeypatch.setattr(pipeline, "process_unit", flaky)
    run_dir = tmp_path / "rd"
    result = run(config(tmp_path, red_roof_model, [image], run_dir=run_dir))
    errors = pyogrio.read_dataframe(tmp_path / "out.gpkg", layer="errors")
    assert list(errors.stage) == ["unit"] and "OSError: disk hiccup" in errors.reason[0]
    assert result.metadata["units_failed"] == 1 and len(result.failed_units) == 1
    assert len(list((run_dir / "parts").glob("*.error.json"))) == 1

    monkeypatch.setattr(pipeline, "process_unit", real)
    result = run(config(tmp_path, red_roof_model, [image], run_dir=run_dir, resume=True, overwrite=True))
    assert result.metadata["units_resumed"] == 15 and result.metadata["units_failed"] == 0
    assert len(result.buildings) == len(BOXES)
    assert not list((run_dir / "parts").glob("*.error.json"))
    assert len(pyogrio.read_dataframe(tmp_path / "out.gpkg", layer="errors")) == 0


def test_mixed_crs_in_one_folder(tmp_path, red_roof_model):
    folder = tmp_path / "tiles"
    folder.mkdir()
    write_rgb(folder / "a.tif", scene(64, 64, [(10, 10, 30, 30)]))
    beside_a = from_origin(500000.0 + 64 * 0.3, 100000.0, 0.3, 0.3)  # a and b form one mosaic
    write_rgb(folder / "b.tif", scene(64, 64, [(10, 10, 30, 30)]), transform=beside_a)
    write_rgb(folder / "c.tif", scene(64, 64, [(10, 10, 30, 30)]), crs="EPSG:32637")
    result = run(config(tmp_path, red_roof_model, [folder]))
    assert [e.path.name for e in result.errors] == ["c.tif"]
    assert "mixed CRS" in result.errors[0].reason and "--crs" in result.errors[0].reason
    assert len(result.buildings) == 2
    # an explicit --crs accepts them all (reprojected); files named one by one are not grouped
    result = run(config(tmp_path, red_roof_model, [folder], crs="EPSG:32636", overwrite=True))
    assert not result.errors and len(result.buildings) == 3
    result = run(config(tmp_path, red_roof_model, sorted(folder.iterdir()), overwrite=True))
    assert not result.errors and len(result.buildings) == 3


def test_part_files_are_whole_and_idempotent(tmp_path):
    frame = empty_buildings("EPSG:32636")
    frame = gpd.GeoDataFrame(
        pd.concat([frame, frame.iloc[:0]]).reindex(range(2)), geometry="geometry", crs="EPSG:32636"
    )
    frame["geometry"] = [box(0, 0, 1, 1), box(2, 2, 3, 4)]
    frame["area_m2"] = [1.0, 2.0]
    frame["source_image"] = "x.tif"
    record = UnitRecord(uid="u1", raster="x.tif", buildings=2, seconds=0.5, pid=7)
    write_part(tmp_path, record, frame)
    write_part(tmp_path, record, frame)  # a unit run twice: same single part
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == ["u1.gpkg"]
    got_record, got = read_part(tmp_path / "parts" / "u1.gpkg")
    assert got_record == record
    assert list(got.columns) == [*BUILDING_COLUMNS, "geometry"] and list(got.area_m2) == [1.0, 2.0]
    # an error part is superseded by a later finished part
    write_error_part(tmp_path, UnitRecord(uid="u2", raster="x.tif", error="bad"))
    assert (tmp_path / "parts" / "u2.error.json").exists()
    write_part(tmp_path, UnitRecord(uid="u2", raster="x.tif"), empty_buildings("EPSG:32636"))
    assert not (tmp_path / "parts" / "u2.error.json").exists()
    rundir = RunDir(tmp_path)
    finished, failed = rundir.records(["u1", "u2", "u3"])
    assert set(finished) == {"u1", "u2"} and not failed
    assert rundir.finished(["u1", "u2", "u3"]) == {"u1", "u2"}
    assert rundir.finished(["u1"], need_probability=True) == set()


def test_merge_is_atomic(tmp_path):
    empty = empty_buildings("EPSG:32636")
    record = UnitRecord(uid="u1", raster="x.tif", buildings=1)
    frame = empty_buildings("EPSG:32636").reindex(range(1))
    frame = gpd.GeoDataFrame(frame, geometry=[box(0, 0, 1, 1)], crs="EPSG:32636")
    part = write_part(tmp_path / "rd", record, frame)
    dest = tmp_path / "out.gpkg"
    dest.write_bytes(b"precious")
    with pytest.raises(OutputExistsError):
        merge_buildings(dest, [part], "EPSG:32636", empty, {}, overwrite=False)
    assert dest.read_bytes() == b"precious"
    broken = tmp_path / "rd" / "parts" / "broken.gpkg"
    broken.write_bytes(b"not a geopackage")
    with pytest.raises(Exception):  # noqa: B017 - whatever GDAL raises, nothing half-written is left
        merge_buildings(dest, [part, broken], "EPSG:32636", empty, {}, overwrite=True)
    assert dest.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gpkg", "rd"]
    assert (
        merge_buildings(dest, [part], "EPSG:4326", empty, {"t": pd.DataFrame({"a": [1]})}, overwrite=True)
        == 1
    )
    out = pyogrio.read_dataframe(dest, layer="buildings")
    assert out.crs.to_epsg() == 4326 and len(out) == 1 and out.geometry.is_valid.iloc[0]
    assert "layer_styles" in {name for name, _ in pyogrio.list_layers(dest)}


def test_sigkill_during_the_final_merge_leaves_the_old_output(tmp_path, red_roof_model, image):
    """README: "an interrupted run never leaves a half-written GeoPackage": a real ``kill -9`` of ``bldgseg run``
    half-way through the merge (held there by ``tests/merge_pause_preload.py``) leaves the old output as it
    was, byte for byte; the run then finishes with ``--resume``."""
    out, run_dir, paused = tmp_path / "out.gpkg", tmp_path / "rd", tmp_path / "paused.txt"
    run(config(tmp_path, red_roof_model, [image]))
    old, reference = out.read_bytes(), buildings_of(out)
    command = [sys.executable, "-m", "bldgseg", "run", str(image), "-o", str(out), "--model", str(red_roof_model)]
    command += ["--device", "cpu", "--chunk-size", "64", "--max-building-size", "10", "--min-area", "0"]
    command += ["--simplify", "0", "--overwrite", "--run-dir", str(run_dir)]
    command += ["--preload", str(REPO / "tests" / "dask_preload.py")]  # registers the test model
    command += ["--preload", str(REPO / "tests" / "merge_pause_preload.py")]
    env = dict(os.environ, PYTHONPATH=str(REPO), **{PAUSED_ENV: str(paused)})
    with open(tmp_path / "client.log", "wb") as log:
        client = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 300
        while not paused.exists() and client.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert paused.exists(), (tmp_path / "client.log").read_text()[-3000:]
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == -signal.SIGKILL
    assert out.read_bytes() == old
    writing = Path(paused.read_text())  # the merge was writing here, next to the output, under a hidden name
    assert writing.parent == out.parent and writing.name.startswith(".out.gpkg.") and writing.exists()
    assert len(parts(run_dir)) == 16  # every unit had finished: the kill hit the merge
    resumed = run(config(tmp_path, red_roof_model, [image], run_dir=run_dir, resume=True, overwrite=True))
    assert resumed.metadata["units_resumed"] == 16
    pd.testing.assert_frame_equal(buildings_of(out), reference)
    assert not writing.exists()  # the killed writer's temporary file went with the next merge
