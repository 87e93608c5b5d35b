"""Scale-out with a real Dask scheduler and workers started as separate processes on loopback.

The workers import ``tests/dask_preload.py`` (``--preload``) so that they can load the test-only checkpoints;
the checkpoints and rasters live in ``tmp_path``, which the workers see because they run on this machine.
Every process a test starts is killed in a ``finally``; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import tifffile
from rasterio.transform import from_origin
from typer.testing import CliRunner

from bldgseg.cli import app
from bldgseg.errors import InputError
from bldgseg.executors import (
    DaskExecutor,
    SlurmOptions,
    local_cluster_kwargs,
    make_executor,
    slurm_cluster,
    task_resources,
)
from bldgseg.pipeline import RunConfig, run
from tests.conftest import RED, REPO, ROOF_SHADES, save_test_model, scene, write_rgb
from tests.dask_preload import SlowRedRoofNet

pytestmark = pytest.mark.distributed

DASK = str(Path(sys.executable).with_name("dask"))
PRELOAD = str(REPO / "tests" / "dask_preload.py")
STARTUP_TIMEOUT = 120.0
RUN_TIMEOUT = 300.0


# ---------------------------------------------------------------------------------------------- cluster


class LoopbackCluster:
    """``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, killed by :meth:`close`."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen] = []
        self.workers: dict[str, subprocess.Popen] = {}
        self.address = ""

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
        with open(self.folder / log, "wb") as out:
            proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def start_scheduler(self) -> str:
        scheduler_file = self.folder / "scheduler.json"
        proc = self._spawn(
            [
                DASK,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--dashboard-address",  # its HTTP endpoints (health, metrics) on a free port, not 8787
                "127.0.0.1:0",
                "--scheduler-file",
                str(scheduler_file),
            ],
            "scheduler.log",
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"scheduler exited: {(self.folder / 'scheduler.log').read_text()[-2000:]}")
            try:
                self.address = json.loads(scheduler_file.read_text())["address"]
                return self.address
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                time.sleep(0.2)
        raise TimeoutError("the scheduler did not write its scheduler file in time")

    def start_worker(self, name: str, resources: str | None = None) -> subprocess.Popen:
        args = [
            DASK,
            "worker",
            self.address,
            "--name",
            name,
            "--nthreads",
            "1",
            "--nworkers",
            "1",
            "--no-nanny",
            "--host",
            "127.0.0.1",
            "--no-dashboard",
            "--memory-limit",
            "0",
            "--death-timeout",
            "60",
            "--local-directory",
            str(self.folder / f"{name}-space"),
            "--preload",
            PRELOAD,
        ]
        if resources:
            args += ["--resources", resources]
        self.workers[name] = self._spawn(args, f"{name}.log")
        return self.workers[name]

    def wait_for_workers(self, count: int) -> None:
        from distributed import Client

        with Client(self.address, timeout="30s", set_as_default=False) as client:
            try:
                client.wait_for_workers(count, timeout=STARTUP_TIMEOUT)
            except TimeoutError:
                logs = {p.name: p.read_text()[-1500:] for p in self.folder.glob("*.log")}
                raise TimeoutError(f"workers did not join: {logs}") from None

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)


def start_cluster(folder: Path, workers: dict[str, str | None]) -> LoopbackCluster:
    cluster = LoopbackCluster(folder)
    try:
        cluster.start_scheduler()
        for name, resources in workers.items():
            cluster.start_worker(name, resources)
        cluster.wait_for_workers(len(workers))
    except BaseException:
        cluster.close()
        raise
    return cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two workers shared by this module's non-destructive tests; w1 declares a GPU."""
    folder = tmp_path_factory.mktemp("cluster")
    loopback = start_cluster(folder, {"w0": None, "w1": "GPU=1"})
    try:
        yield loopback
    finally:
        loopback.close()


# ---------------------------------------------------------------------------------------------- helpers


def slow_model(folder: Path) -> Path:
    return save_test_model(SlowRedRoofNet(), folder, "red-roof-slow-test", tile_size=64, overlap=16)


def config(tmp_path: Path, model: Path, inputs: list[Path], output: str = "out.gpkg", **kw) -> RunConfig:
    kw.setdefault("simplify_m", 0.0)
    kw.setdefault("min_area_m2", 0.0)
    return RunConfig(inputs=inputs, output=tmp_path / output, model=str(model), device="cpu", **kw)


def grid_boxes(size: int, step_r: int = 90, step_c: int = 110) -> list[tuple[int, int, int, int]]:
    """20 x 30 px roofs on a grid (some of them cross the 128-px chunk seams)."""
    return [
        (r, c, r + 20, c + 30) for r in range(10, size - 20, step_r) for c in range(25, size - 30, step_c)
    ]


def read_sorted(path: Path):
    gdf = pyogrio.read_dataframe(path, layer="buildings")
    key = np.lexsort((gdf.centroid_lat.round(7), gdf.centroid_lon.round(7)))
    return gdf.iloc[key].reset_index(drop=True)


def assert_same_buildings(a: Path, b: Path) -> None:
    """Same buildings (geometry to 1 mm) and attributes within float tolerance, in the same CRS."""
    left, right = read_sorted(a), read_sorted(b)
    assert left.crs == right.crs
    assert list(left.columns) == list(right.columns)
    assert len(left) == len(right) > 0
    assert left.geometry.geom_equals_exact(right.geometry, tolerance=1e-3).all()
    for column in left.columns:
        if column == "geometry":
            continue
        if left[column].dtype.kind == "f":
            assert np.allclose(left[column], right[column], rtol=1e-5, atol=1e-6, equal_nan=True), column
        else:
            assert (left[column] == right[column]).all(), column


def part_files(run_dir: Path) -> dict[str, tuple[int, int]]:
    """Finished parts: name -> (mtime_ns, inode)."""
    parts = run_dir / "parts"
    if not parts.is_dir():
        return {}
    found = {}
    for p in parts.glob("*.gpkg"):
        if p.name.startswith("."):
            continue
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        found[p.name] = (st.st_mtime_ns, st.st_ino)
    return found


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def assert_every_box_once(gpkg: Path, boxes: list[tuple[int, int, int, int]], gsd: float = 0.3) -> None:
    buildings = pyogrio.read_dataframe(gpkg, layer="buildings")
    expected = sorted((r1 - r0) * (c1 - c0) * gsd * gsd for r0, c0, r1, c1 in boxes)
    assert len(buildings) == len(boxes)
    assert np.allclose(sorted(buildings.area_m2), expected, rtol=1e-6)
    points = buildings.geometry.centroid
    centres = {(round(x, 2), round(y, 2)) for x, y in zip(points.x, points.y, strict=True)}
    assert len(centres) == len(boxes)  # no building twice


# ---------------------------------------------------------------------------------------------- tests


def test_instances_on_the_cluster_match_the_local_run(tmp_path, roof_instance_model, cluster):
    # touching roofs of different shades in rows crossing the 128-px chunk seams
    row = [
        (60, 100, 95, 122),
        (60, 122, 90, 148),
        (60, 148, 95, 170),
        (200, 230, 230, 250),
        (200, 250, 235, 280),
    ]
    image = write_rgb(tmp_path / "a.tif", scene(320, 320, row, ROOF_SHADES * 2))
    common = dict(chunk_size=128, max_building_size_m=20.0, texture=False)
    run(config(tmp_path, roof_instance_model, [image], "local.gpkg", **common))
    remote = run(
        config(tmp_path, roof_instance_model, [image], "remote.gpkg", scheduler=cluster.address, **common)
    )
    assert remote.metadata["units"] == 9 and remote.metadata["units_failed"] == 0
    assert_same_buildings(tmp_path / "local.gpkg", tmp_path / "remote.gpkg")
    assert len(remote.buildings) == len(row)


def test_local_and_distributed_runs_write_the_same_geopackage(tmp_path, red_roof_model, cluster):
    # 128-px chunks: the big roof crosses the seams at row 256 and column 256 (one polygon expected)
    boxes = [*grid_boxes(512, 120, 140), (230, 240, 290, 300)]
    image = write_rgb(tmp_path / "a.tif", scene(512, 512, boxes))
    common = dict(chunk_size=128, max_building_size_m=20.0)
    run(config(tmp_path, red_roof_model, [image], "local.gpkg", save_masks=tmp_path / "m_local", **common))
    remote = run(
        config(
            tmp_path,
            red_roof_model,
            [image],
            "remote.gpkg",
            scheduler=cluster.address,
            save_masks=tmp_path / "m_remote",
            **common,
        )
    )
    assert remote.metadata["executor"].startswith("scheduler")
    assert remote.metadata["units"] == 16 and remote.metadata["units_failed"] == 0
    assert_same_buildings(tmp_path / "local.gpkg", tmp_path / "remote.gpkg")
    assert_every_box_once(tmp_path / "remote.gpkg", boxes)
    # probability maps: written per unit by the workers, assembled into the same COG
    local_map, remote_map = (
        tmp_path / "m_local" / "a.probability.tif",
        tmp_path / "m_remote" / "a.probability.tif",
    )
    with rasterio.open(local_map) as a, rasterio.open(remote_map) as b:
        assert np.array_equal(a.read(1), b.read(1)) and b.transform == a.transform
        assert np.array_equal(b.read(1) > 127, scene(512, 512, boxes)[0] == 220)
    big = remote.buildings.loc[remote.buildings.area_m2.idxmax()]
    assert big.area_m2 == pytest.approx(60 * 60 * 0.09, rel=1e-6)  # whole, once, across two seams
    # both workers took part, and each loaded the model once for its 8-odd units
    assert remote.metadata["workers"] == 2
    from distributed import Client

    from tests.dask_preload import model_loads

    with Client(cluster.address, set_as_default=False) as client:
        loads = client.run(model_loads)
    assert [counts.get(str(red_roof_model.resolve())) for counts in loads.values()] == [1, 1]
    assert not (tmp_path / ".remote.gpkg.run").exists()  # implicit run directory removed after success


def test_mosaic_of_tiles_on_the_cluster_matches_the_local_run(tmp_path, red_roof_model, cluster):
    # four 256-px tiles; the big roof lies across their common corner, others cross the 128-px chunk seams
    boxes = [*grid_boxes(512, 120, 140), (230, 240, 290, 300)]
    image = scene(512, 512, boxes)
    folder = tmp_path / "tiles"
    folder.mkdir()
    for r in (0, 256):
        for c in (0, 256):
            transform = from_origin(500000.0 + c * 0.3, 100000.0 - r * 0.3, 0.3, 0.3)
            write_rgb(folder / f"t{r}_{c}.tif", image[:, r : r + 256, c : c + 256], transform=transform)
    common = dict(chunk_size=128, max_building_size_m=20.0)
    run(config(tmp_path, red_roof_model, [folder], "local.gpkg", save_masks=tmp_path / "m_local", **common))
    remote = run(
        config(
            tmp_path,
            red_roof_model,
            [folder],
            "remote.gpkg",
            scheduler=cluster.address,
            save_masks=tmp_path / "m_remote",
            **common,
        )
    )
    assert remote.metadata["units"] == 16 and remote.metadata["units_failed"] == 0
    assert len(json.loads(remote.metadata["mosaics"])) == 1
    assert_same_buildings(tmp_path / "local.gpkg", tmp_path / "remote.gpkg")  # source_image included
    assert_every_box_once(tmp_path / "remote.gpkg", boxes)
    name = "mosaic_t0_0_4tiles.probability.tif"
    with rasterio.open(tmp_path / "m_local" / name) as a, rasterio.open(tmp_path / "m_remote" / name) as b:
        assert np.array_equal(a.read(1), b.read(1)) and (b.width, b.height) == (512, 512)
    tiles = {f"t{r}_{c}.tif" for r in (0, 256) for c in (0, 256)}
    assert {Path(p).name for p in remote.buildings.source_image} == tiles


def test_local_cluster_of_worker_processes_gives_the_same_result(tmp_path, red_roof_model):
    image = write_rgb(tmp_path / "a.tif", scene(256, 256, grid_boxes(256)))
    common = dict(chunk_size=128, max_building_size_m=10.0)
    run(config(tmp_path, red_roof_model, [image], "local.gpkg", **common))
    result = run(
        config(tmp_path, red_roof_model, [image], "procs.gpkg", workers=2, preload=(PRELOAD,), **common)
    )
    assert result.metadata["executor"] == "local cluster (2 worker processes)"
    assert result.metadata["units"] == 4
    assert_same_buildings(tmp_path / "local.gpkg", tmp_path / "procs.gpkg")


def test_bad_files_are_listed_in_errors_and_never_stop_the_run(tmp_path, red_roof_model, cluster):
    folder = tmp_path / "in"
    folder.mkdir()
    # apart from each other and from corrupt_tile.tif (touching files would form one mosaic)
    apart = [from_origin(500000.0 - 1000.0 * k, 100000.0, 0.3, 0.3) for k in (1, 2)]
    write_rgb(folder / "good_a.tif", scene(128, 128, [(10, 10, 30, 40), (70, 70, 100, 90)]), transform=apart[0])
    write_rgb(folder / "good_b.tif", scene(128, 128, [(20, 20, 50, 50)]), transform=apart[1])
    write_rgb(folder / "other_zone.tif", scene(128, 128, [(20, 20, 50, 50)]), crs="EPSG:32637")
    (folder / "garbage.tif").write_bytes(b"not a tiff at all")
    with rasterio.open(
        folder / "nocrs.tif", "w", driver="GTiff", width=8, height=8, count=3, dtype="uint8"
    ) as ds:
        ds.write(np.zeros((3, 8, 8), np.uint8))
    full = write_rgb(tmp_path / "full.tif", scene(256, 256, [(10, 10, 30, 30)]))
    data = full.read_bytes()
    (folder / "truncated.tif").write_bytes(data[: len(data) // 2])
    # pixel data corrupt in one tile the input scan does not sample: only that work unit fails
    corrupt = folder / "corrupt_tile.tif"
    rgb = scene(256, 2048, [(100, 40, 130, 80), (100, 1800, 130, 1840)])
    with rasterio.open(
        corrupt,
        "w",
        driver="GTiff",
        width=2048,
        height=256,
        count=3,
        dtype="uint8",
        crs="EPSG:32636",
        transform=from_origin(500000.0, 100000.0, 0.3, 0.3),
        tiled=True,
        blockxsize=16,
        blockysize=16,
        compress="deflate",
    ) as ds:
        ds.write(rgb)
    with tifffile.TiffFile(corrupt) as tif:
        page = tif.pages[0]
        # tile row 2, column 46: pixels x 736..751, read by the chunk x 512..1023 only (its neighbours' halos
        # of 200 px reach x 712 and x 824)
        tile = 2 * (2048 // 16) + 46
        offset, count = page.dataoffsets[tile], page.databytecounts[tile]
    with open(corrupt, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff" * count)

    result = run(config(tmp_path, red_roof_model, [folder], chunk_size=512, scheduler=cluster.address))
    errors = pyogrio.read_dataframe(tmp_path / "out.gpkg", layer="errors")
    rows = zip(errors.path, errors.reason, errors.stage, strict=True)
    by_name = {Path(p).name: (reason, stage) for p, reason, stage in rows}
    assert set(by_name) == {"garbage.tif", "nocrs.tif", "truncated.tif", "other_zone.tif", "corrupt_tile.tif"}
    assert by_name["nocrs.tif"][1] == "scan" and "coordinate reference system" in by_name["nocrs.tif"][0]
    assert by_name["truncated.tif"][1] == "scan" and "truncated" in by_name["truncated.tif"][0]
    assert by_name["garbage.tif"][1] == "scan"
    assert by_name["other_zone.tif"][1] == "crs" and "mixed CRS" in by_name["other_zone.tif"][0]
    assert (
        by_name["corrupt_tile.tif"][1] == "unit" and "TIFFReadEncodedTile" in by_name["corrupt_tile.tif"][0]
    )
    assert all("\n" not in r for r in errors.reason)
    # every good file's buildings, and those of corrupt_tile.tif's healthy chunks (3 of 4)
    names = result.buildings.source_image.map(lambda p: Path(p).name)
    assert names.value_counts().to_dict() == {"good_a.tif": 2, "good_b.tif": 1, "corrupt_tile.tif": 2}
    assert result.metadata["units_failed"] == 1


def test_gpu_tasks_only_run_on_workers_that_declare_a_gpu(cluster):
    from tests.dask_preload import worker_name

    assert task_resources("cuda", gpu_workers=False) == {"GPU": 1}
    assert task_resources("cpu", gpu_workers=True) is None
    assert task_resources("auto", gpu_workers=True) == {"GPU": 1}
    executor = make_executor(scheduler=cluster.address)
    try:
        assert isinstance(executor, DaskExecutor)
        assert executor.task_resources("cuda:0") == {"GPU": 1}  # w1 declares GPU=1
        assert executor.task_resources("cpu") is None
        names = [out for _unit, out in executor.map_units(worker_name, list(range(6)), resources={"GPU": 1})]
        assert names == ["w1"] * 6
        names = {out for _unit, out in executor.map_units(worker_name, list(range(20)))}
        assert names <= {"w0", "w1"}
    finally:
        executor.close()


def test_cuda_without_gpu_workers_is_a_device_error(tmp_path):
    from bldgseg.errors import DeviceError

    loopback = start_cluster(tmp_path / "cluster", {"w0": None})
    try:
        executor = make_executor(scheduler=loopback.address)
        try:
            with pytest.raises(DeviceError, match="GPU=1"):
                executor.task_resources("cuda")
            assert executor.task_resources("auto") is None
        finally:
            executor.close()
    finally:
        loopback.close()


def test_worker_killed_mid_run_every_building_once(tmp_path):
    model = slow_model(tmp_path)
    boxes = grid_boxes(1024)
    image = write_rgb(tmp_path / "a.tif", scene(1024, 1024, boxes))
    loopback = start_cluster(tmp_path / "cluster", {"w0": None, "w1": None})
    run_dir = tmp_path / "rd"
    killed: dict[str, int] = {}

    def killer() -> None:
        try:
            wait_until(lambda: len(part_files(run_dir)) >= 4, RUN_TIMEOUT, "the first part files")
        except TimeoutError:
            return
        victim = loopback.workers["w0"]
        killed["pid"] = victim.pid
        killed["parts_before"] = len(part_files(run_dir))
        os.kill(victim.pid, signal.SIGKILL)

    thread = threading.Thread(target=killer, daemon=True)
    try:
        thread.start()
        result = run(
            config(
                tmp_path,
                model,
                [image],
                chunk_size=128,
                max_building_size_m=6.0,
                scheduler=loopback.address,
                run_dir=run_dir,
            )
        )
        thread.join(timeout=10)
    finally:
        loopback.close()
    assert killed, "the worker was never killed"
    assert loopback.workers["w0"].returncode == -signal.SIGKILL
    assert killed["parts_before"] < 64  # it died mid-run
    assert result.metadata["units"] == 64 and result.metadata["units_failed"] == 0
    assert_every_box_once(tmp_path / "out.gpkg", boxes)
    # the killed worker had finished some units before it died; the survivor did the rest
    # (a part the killed worker was writing stays a hidden temporary file: not a part)
    parts = [p for p in (run_dir / "parts").glob("*.gpkg") if not p.name.startswith(".")]
    pids = {pyogrio.read_dataframe(p, layer="unit").pid.iloc[0] for p in parts}
    assert killed["pid"] in pids and len(pids) == 2


def test_unit_that_kills_every_worker_it_runs_on_is_listed_in_errors(tmp_path, monkeypatch):
    """README "Faults": a unit whose worker dies each time it is tried (Dask gives up after its first try and
    ``distributed.scheduler.allowed-failures`` = 3 retries) becomes a row of ``errors``; the run goes on."""
    import dask
    import distributed  # noqa: F401  (loads its configuration defaults)

    from tests.dask_preload import DEATHS_ENV, PoisonRedRoofNet

    deaths = tmp_path / "deaths.txt"
    monkeypatch.setenv(DEATHS_ENV, str(deaths))  # the LocalCluster's worker processes inherit it
    model = save_test_model(PoisonRedRoofNet(), tmp_path, "red-roof-poison-test", tile_size=64, overlap=16)
    # two 128-px chunks; the right one holds a blue patch far from the seam (its neighbour's halo is 10 px)
    boxes = [(20, 20, 50, 60), (70, 150, 100, 200), (20, 200, 40, 230)]
    image = write_rgb(tmp_path / "a.tif", scene(128, 256, boxes, [RED, RED, (0, 0, 255)]))
    assert dask.config.get("distributed.scheduler.allowed-failures") == 3
    # should every worker be lost for good, the unit fails after a while instead of the test hanging
    with dask.config.set({"distributed.scheduler.no-workers-timeout": f"{RUN_TIMEOUT:.0f}s"}):
        result = run(
            config(
                tmp_path, model, [image], chunk_size=128, max_building_size_m=3.0, workers=2,
                preload=(PRELOAD,), texture=False,
            )
        )  # fmt: skip
    assert len(deaths.read_text().split()) == 1 + 3  # the first try and 3 retries, each a dead worker
    assert result.metadata["units"] == 2 and result.metadata["units_failed"] == 1
    errors = pyogrio.read_dataframe(tmp_path / "out.gpkg", layer="errors")
    assert list(errors.stage) == ["unit"] and Path(errors.path.iloc[0]).name == "a.tif"
    reason = errors.reason.iloc[0]
    assert "the worker running it died each time it was tried" in reason and "--chunk-size" in reason
    assert "KilledWorker" in reason
    # the healthy chunk's building is there (the red roof in the poisoned chunk went with it)
    assert list(result.buildings.area_m2.round(3)) == [round(30 * 40 * 0.09, 3)]


def test_resume_after_the_client_is_killed(tmp_path, cluster):
    model = slow_model(tmp_path)
    boxes = grid_boxes(1024)
    image = write_rgb(tmp_path / "a.tif", scene(1024, 1024, boxes))
    out, run_dir = tmp_path / "out.gpkg", tmp_path / "rd"
    base = [sys.executable, "-m", "bldgseg", "run", str(image), "-o", str(out), "--model", str(model)]
    base += ["--device", "cpu", "--chunk-size", "128", "--max-building-size", "6", "--preload", PRELOAD]
    base += ["--scheduler", cluster.address]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(tmp_path / "first.log", "wb") as log:
        client = subprocess.Popen(
            [*base, "--run-dir", str(run_dir)], cwd=REPO, env=env, stdout=log, stderr=log
        )
    try:
        wait_until(lambda: len(part_files(run_dir)) >= 6 or client.poll() is not None, RUN_TIMEOUT, "parts")
        assert client.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == -signal.SIGKILL
    assert not out.exists()

    # units already running on the workers may still land; wait until the part count is steady
    def steady() -> bool:
        before = len(part_files(run_dir))
        time.sleep(1.5)
        return len(part_files(run_dir)) == before

    wait_until(steady, 60, "in-flight units to finish")
    finished = part_files(run_dir)
    assert 6 <= len(finished) < 64

    second = subprocess.run(
        [*base, "--resume", str(run_dir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"{len(finished)} unit(s) kept" in " ".join(second.stderr.split())
    after = part_files(run_dir)
    assert len(after) == 64
    assert all(after[name] == stamp for name, stamp in finished.items())  # not redone
    manifest = json.loads((run_dir / "manifest.json").read_text())
    session = manifest["sessions"][-1]
    assert session["units_done_before"] == len(finished)
    assert session["units_submitted"] == 64 - len(finished) == session["units_completed"]
    assert_every_box_once(out, boxes)


# ---------------------------------------------------------------------------------------------- SLURM


def slurm_options() -> SlurmOptions:
    return SlurmOptions(
        jobs=3,
        queue="gpu",
        account="hazard-lab",
        walltime="04:00:00",
        cores=8,
        memory="32GB",
        gpus=1,
        interface="lo",
        prologue=("source /home/me/bldgseg/.venv/bin/activate",),
        extra_directives=("--constraint=a100",),
    )


def test_slurm_job_script_without_slurm():
    cluster = slurm_cluster(slurm_options(), preload=("my_arch",))
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    lines = script.splitlines()
    for directive in (
        "#SBATCH -p gpu",
        "#SBATCH -A hazard-lab",
        "#SBATCH -t 04:00:00",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --constraint=a100",
    ):
        assert directive in lines, script
    assert "export OMP_NUM_THREADS=8" in lines
    assert "source /home/me/bldgseg/.venv/bin/activate" in lines
    worker = next(line for line in lines if "distributed.cli.dask_worker" in line)
    assert "--nthreads 1" in worker and "--resources GPU=1" in worker and "--preload my_arch" in worker
    assert worker.split()[1:3] == ["-m", "distributed.cli.dask_worker"] and "tcp://127.0.0.1:" in worker


def test_cli_prints_the_slurm_job_script():
    result = CliRunner().invoke(
        app,
        [
            "run",
            "in.tif",
            "-o",
            "out.gpkg",
            "--cluster",
            "slurm",
            "--workers",
            "4",
            "--slurm-queue",
            "gpu",
            "--slurm-gpus",
            "2",
            "--slurm-interface",
            "lo",
            "--print-job-script",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "#SBATCH -p gpu" in result.output and "--resources GPU=2" in result.output


def test_executor_options_that_do_not_go_together():
    with pytest.raises(InputError, match="--scheduler"):
        make_executor(scheduler="tcp://127.0.0.1:1", workers=2)
    with pytest.raises(InputError, match="--cluster"):
        make_executor(cluster="kubernetes")
    kwargs = local_cluster_kwargs(3, device="cuda", preload=("x",))
    assert kwargs["n_workers"] == 3 and kwargs["threads_per_worker"] == 1 and kwargs["processes"]
    assert kwargs["resources"] == {"GPU": 1} and kwargs["preload"] == ["x"] and kwargs["host"] == "127.0.0.1"
    assert "resources" not in local_cluster_kwargs(2, device="cpu")
