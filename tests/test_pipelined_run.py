"""The pipelined run (units overlapping the model, batches prepared ahead) gives the sequential run's buildings,
keeps at most one unit on the model and two in memory, and a failing stage is still one unit's one-line error."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from rasterio.windows import Window

import bldgseg.band_helpers as band_helpers
import bldgseg.pipeline.bands as bands
import bldgseg.pipeline.measure as measure_module
import bldgseg.pipeline.unit as unit_module
from bldgseg.executors import LocalExecutor
from bldgseg.inference import Predictor
from bldgseg.pipeline import RunConfig, run
from tests.conftest import SAMPLE, scene, write_rgb

KAMPALA = SAMPLE / "images" / "kampala_mosaic_z20.tif"


@pytest.fixture
def sequential(monkeypatch: pytest.MonkeyPatch):
    """Turn the overlap off: one unit at a time, batches made when the model asks for them."""

    def apply() -> None:
        monkeypatch.setattr("bldgseg.executors.UNITS_AHEAD", 0)
        monkeypatch.setattr("bldgseg.inference.PREFETCH_BATCHES", 0)

    return apply


class StageLog:
    """Start/end times of calls to stage functions, by stage; wraps them with ``monkeypatch``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.intervals: dict[str, list[tuple[float, float]]] = {}
        self.monkeypatch = monkeypatch
        self._lock = threading.Lock()

    def wrap(self, target: object, name: str, stage: str) -> None:
        real = getattr(target, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                with self._lock:
                    self.intervals.setdefault(stage, []).append((start, time.perf_counter()))

        self.monkeypatch.setattr(target, name, timed)

    def most_at_once(self, stage: str) -> int:
        events = sorted([(s, 1) for s, _ in self.intervals[stage]] + [(e, -1) for _, e in self.intervals[stage]])
        inside = most = 0
        for _, step in events:
            inside += step
            most = max(most, inside)
        return most

    def overlapping(self, stage: str, other: str) -> bool:
        return any(s < e2 and s2 < e for s, e in self.intervals[stage] for s2, e2 in self.intervals[other])


def bundled_run(tmp_path: Path, name: str) -> pd.DataFrame:
    result = run(
        RunConfig(
            inputs=[KAMPALA], output=tmp_path / f"{name}.gpkg", model="aerial-buildings", device="cpu",
            chunk_size=512, max_building_size_m=60.0,
        )
    )  # fmt: skip
    assert result.metadata["units"] == 4 and result.metadata["units_failed"] == 0
    return result.buildings


def test_pipelined_run_gives_the_sequential_runs_buildings_with_the_bundled_model(
    tmp_path, monkeypatch, sequential
):
    log = StageLog(monkeypatch)
    log.wrap(Predictor, "predict", "model")
    log.wrap(unit_module, "maps_to_source", "after model")
    for after_model in ("vectorize_window", "postprocess_chunk", "measure_buildings"):
        log.wrap(measure_module, after_model, "after model")
    log.wrap(unit_module, "process_unit", "unit")
    pipelined = bundled_run(tmp_path, "pipelined")
    assert len(pipelined) > 30
    assert log.most_at_once("model") == 1  # one unit on the model at a time...
    assert log.most_at_once("unit") == 2  # ...one more in flight (memory: two chunks at most)...
    assert log.overlapping("after model", "model")  # ...vectorized while another unit runs the model
    sequential()
    reference = bundled_run(tmp_path, "sequential")
    assert list(pipelined.columns) == list(reference.columns)
    pd.testing.assert_frame_equal(
        pd.DataFrame(pipelined.drop(columns="geometry")), pd.DataFrame(reference.drop(columns="geometry"))
    )
    assert all(shapely.equals_exact(pipelined.geometry.values, reference.geometry.values, tolerance=0))
    union = shapely.union_all(reference.geometry.values)
    assert union.symmetric_difference(shapely.union_all(pipelined.geometry.values)).area == 0


def bldgseg_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("bldgseg-")]


@pytest.fixture
def image(tmp_path: Path) -> Path:
    boxes = [(r, c, r + 20, c + 30) for r in range(10, 256, 60) for c in range(10, 256, 60)]
    return write_rgb(tmp_path / "roofs.tif", scene(256, 256, boxes))


def small_run(tmp_path: Path, model: Path, image: Path):
    return run(
        RunConfig(
            inputs=[image], output=tmp_path / "out.gpkg", model=str(model), device="cpu", chunk_size=64,
            max_building_size_m=12.0, simplify_m=0.0, batch_size=2,
        )
    )  # fmt: skip


def test_a_read_failing_in_the_middle_of_the_run_is_that_units_one_line_error(
    tmp_path, red_roof_model, image, monkeypatch
):
    real = unit_module.read_model_region
    calls = [0]
    lock = threading.Lock()

    def failing(info, grid, region):
        with lock:
            calls[0] += 1
            fail = calls[0] == 5  # a unit in the middle of the run
        if fail:
            raise OSError("read failed:\n  block 3 is corrupt")
        return real(info, grid, region)

    monkeypatch.setattr(unit_module, "read_model_region", failing)
    result = small_run(tmp_path, red_roof_model, image)
    assert result.metadata["units_failed"] == 1 and result.metadata["units"] == 16
    errors = pyogrio.read_dataframe(tmp_path / "out.gpkg", layer="errors")
    assert all(r.endswith("OSError: read failed: block 3 is corrupt") for r in errors.reason)
    assert all("\n" not in r for r in errors.reason)
    assert len(result.buildings) > 0  # the other units went on
    assert not bldgseg_threads()


def test_a_batch_failing_in_the_prefetch_thread_is_the_units_error_and_leaves_no_thread(
    tmp_path, red_roof_model, image, monkeypatch
):
    real = Predictor._to_input
    calls = [0]
    lock = threading.Lock()

    def failing(self, stack: np.ndarray):
        with lock:
            calls[0] += 1
            fail = calls[0] == 3
        if fail:
            assert threading.current_thread().name.startswith("bldgseg-prefetch")  # made ahead, not in the unit
            raise ValueError("bad batch")
        return real(self, stack)

    monkeypatch.setattr(Predictor, "_to_input", failing)
    result = small_run(tmp_path, red_roof_model, image)
    assert result.metadata["units_failed"] == 1
    errors = pyogrio.read_dataframe(tmp_path / "out.gpkg", layer="errors")
    assert list(errors.reason.str.extract(r"(ValueError: .*)$")[0]) == ["ValueError: bad batch"]
    assert not bldgseg_threads()


def one_unit_run(tmp_path: Path, name: str) -> pd.DataFrame:
    result = run(
        RunConfig(
            inputs=[KAMPALA], output=tmp_path / f"{name}.gpkg", model="aerial-buildings", device="cpu",
            max_building_size_m=20.0,
        )
    )  # fmt: skip
    assert result.metadata["units"] == 1 and result.metadata["units_failed"] == 0
    return result.buildings


def same_buildings(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Equal rows (geometry exactly, every attribute) in any order."""

    def ordered(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.assign(wkb=shapely.to_wkb(shapely.normalize(frame.geometry.values)))
        return pd.DataFrame(frame.drop(columns="geometry")).sort_values("wkb").reset_index(drop=True)

    pd.testing.assert_frame_equal(ordered(a), ordered(b))


@pytest.fixture
def small_bands(monkeypatch):
    """Bands for the 1024² sample mosaic (one unit; 134-px halo at 0.15 m for 20 m buildings)."""
    monkeypatch.setattr(bands, "MIN_BAND_PIXELS", 1)


@pytest.mark.parametrize("helpers", [1, 2])
def test_a_unit_measured_in_row_bands_by_helper_processes_gives_the_buildings_of_one_piece(
    tmp_path, monkeypatch, small_bands, helpers
):
    monkeypatch.setattr(LocalExecutor, "__init__", with_post_processes(helpers))
    calls = []
    real = band_helpers._Helper.call
    monkeypatch.setattr(band_helpers._Helper, "call", lambda self, args: calls.append(args[3]) or real(self, args))
    banded = one_unit_run(tmp_path, f"banded{helpers}")
    # the bands after the first went to the helpers: 1024 rows in 2 or 3 bands, 134 rows of halo above each
    assert sorted(read.row_off for read in calls) == ([378] if helpers == 1 else [207, 549])
    assert band_helpers.running_helpers() is None  # stopped with the run
    monkeypatch.setattr(bands, "row_bands", lambda *args: None)
    whole = one_unit_run(tmp_path, "whole")
    assert len(whole) > 30
    same_buildings(banded, whole)


def with_post_processes(count: int):
    real = LocalExecutor.__init__

    def init(self, *args, **kwargs):
        real(self, *args, **kwargs)
        self.post_processes = count

    return init


def test_a_helper_that_dies_leaves_its_band_to_the_run(tmp_path, monkeypatch, small_bands, caplog):
    monkeypatch.setattr(LocalExecutor, "__init__", with_post_processes(1))
    monkeypatch.setattr(band_helpers, "WORKER_MODULE", "bldgseg.no_such_module")
    died = one_unit_run(tmp_path, "died")
    assert "band helper process stopped" in caplog.text
    monkeypatch.setattr(bands, "row_bands", lambda *args: None)
    same_buildings(died, one_unit_run(tmp_path, "whole"))


def test_row_bands_split_the_core_and_read_a_halo_inside_the_unit():
    read, core = Window(0, 100, 3000, 2400), Window(0, 200, 3000, 2200)
    (upper_read, upper_core), (lower_read, lower_core) = bands.row_bands(read, core, 100)
    assert (upper_core.row_off, upper_core.height, lower_core.row_off, lower_core.height) == (200, 1100, 1300, 1100)
    assert (upper_read.row_off, upper_read.height) == (100, 1300)  # the unit's own halo above, 100 rows below
    assert (lower_read.row_off, lower_read.height) == (1200, 1300)
    assert upper_read.width == lower_read.width == 3000
    three = bands.row_bands(read, core, 100, most=3)
    assert [(c.row_off, c.height) for _, c in three] == [(200, 733), (933, 734), (1667, 733)]
    assert [(r.row_off, r.height) for r, _ in three] == [(100, 933), (833, 934), (1567, 933)]
    assert len(bands.row_bands(read, core, 400, most=3)) == 2  # three bands would be thinner than two halos
    assert bands.row_bands(read, core, 600) is None
    assert bands.row_bands(Window(0, 0, 100, 2400), Window(0, 0, 100, 2400), 10) is None  # too few pixels
