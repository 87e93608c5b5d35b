"""CLI through Typer's runner (fast paths) and a real subprocess on the bundled sample data and model."""

import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from rasterio.features import rasterize
from typer.testing import CliRunner

from bldgseg import __version__
from bldgseg.cli import app
from bldgseg.cli.run import build_run_config, run
from bldgseg.cli.scaling import ExecutorOptions
from bldgseg.cli.train import train_settings
from bldgseg.pipeline import RunConfig
from tests.conftest import REPO, SAMPLE, scene, write_rgb

runner = CliRunner()


def test_version_and_help():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    result = runner.invoke(app, ["run", "-h"])
    assert result.exit_code == 0 and "--overwrite" in result.output


HEAVY_MODULES = ("torch", "rasterio", "geopandas")


def test_help_of_every_command_imports_no_heavy_library():
    """``bldgseg --help`` stays fast: the library (torch, rasterio, geopandas) is imported by commands only."""
    code = textwrap.dedent(
        """
        import sys
        import typer
        from typer.testing import CliRunner
        from bldgseg.cli import app
        for command in ["", *typer.main.get_command(app).commands]:
            result = CliRunner().invoke(app, [command, "-h"] if command else ["-h"])
            assert result.exit_code == 0, (command, result.output)
        print(",".join(name for name in sys.argv[1:] if name in sys.modules))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-c", code, *HEAVY_MODULES]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"imported by the help alone: {proc.stdout.strip()}"


def test_run_flags_at_their_defaults_give_the_library_defaults():
    """Every ``run`` flag reaches RunConfig (by name or renamed), and the CLI's defaults are the library's."""
    flags = {name: param.default for name, param in inspect.signature(run).parameters.items()}
    flags.update(inputs=[Path("a.tif")], output=Path("o.gpkg"))
    config = build_run_config(flags, ExecutorOptions.from_flags(flags))
    assert config == RunConfig(inputs=[Path("a.tif")], output=Path("o.gpkg"))
    flags.update(min_area=9.0, no_texture=True, resume=Path("runs/x"), preload=["m"], bands="3,2,1")
    config = build_run_config(flags, ExecutorOptions.from_flags(flags))
    assert (config.min_area_m2, config.texture, config.bands, config.preload) == (9.0, False, (3, 2, 1), ("m",))
    assert config.run_dir == Path("runs/x") and config.resume


def test_train_flags_become_settings_under_the_library_names():
    flags = {"config": None, "out": Path("training"), "resume": False, "images": [], "init_weights": None}
    flags.update(arch="unet", gsd=0.3, val_region="1,2,3,4", epochs=None, instances=False)
    settings = train_settings(flags)
    assert settings == {"architecture": "unet", "gsd_m": 0.3, "val_region": (1.0, 2.0, 3.0, 4.0), "instances": False}


def test_run_reports_each_bad_file_on_one_line_and_processes_the_rest(tmp_path, red_roof_model):
    folder = tmp_path / "in"
    folder.mkdir()
    write_rgb(folder / "good.tif", scene(64, 64, [(10, 10, 30, 30)]))
    (folder / "broken.tif").write_bytes(b"II*\x00garbage")
    with rasterio.open(
        folder / "gray.tif",
        "w",
        driver="GTiff",
        width=8,
        height=8,
        count=1,
        dtype="uint8",
        crs="EPSG:32636",
        transform=rasterio.transform.from_origin(0, 0, 1, 1),
    ) as ds:
        ds.write(np.zeros((1, 8, 8), np.uint8))
    out = tmp_path / "o.gpkg"
    result = runner.invoke(
        app, ["run", str(folder), "-o", str(out), "--model", str(red_roof_model), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("skipped:")]
    assert len(lines) == 2
    assert any("gray.tif" in line and "--bands" in line for line in lines)
    assert any("broken.tif" in line for line in lines)
    assert len(pyogrio.read_dataframe(out, layer="buildings")) == 1


def test_run_refuses_existing_output_with_exit_code_3(tmp_path, red_roof_model):
    image = write_rgb(tmp_path / "a.tif", scene(64, 64, [(10, 10, 30, 30)]))
    out = tmp_path / "o.gpkg"
    out.write_text("keep me")
    result = runner.invoke(app, ["run", str(image), "-o", str(out), "--model", str(red_roof_model)])
    assert result.exit_code == 3 and "--overwrite" in result.output
    assert out.read_text() == "keep me"


def test_unknown_model_exit_code_4(tmp_path):
    image = write_rgb(tmp_path / "a.tif", scene(64, 64, []))
    result = runner.invoke(app, ["run", str(image), "-o", str(tmp_path / "o.gpkg"), "--model", "nope"])
    assert result.exit_code == 4 and "aerial-buildings" in result.output


def test_predict_then_vectorize(tmp_path, red_roof_model):
    image = write_rgb(tmp_path / "a.tif", scene(128, 128, [(10, 10, 40, 40), (60, 60, 100, 90)]))
    result = runner.invoke(
        app, ["predict", str(image), "-o", str(tmp_path / "prob"), "--model", str(red_roof_model)]
    )
    assert result.exit_code == 0, result.output
    prob = tmp_path / "prob" / "a.probability.tif"
    result = runner.invoke(app, ["vectorize", str(prob), "-o", str(tmp_path / "v.gpkg"), "--simplify", "0"])
    assert result.exit_code == 0, result.output
    gdf = pyogrio.read_dataframe(tmp_path / "v.gpkg", layer="buildings")
    assert sorted(gdf.area_m2.round(2)) == [pytest.approx(900 * 0.09), pytest.approx(1200 * 0.09)]


def test_attributes_enrich_given_footprints(tmp_path):
    image = write_rgb(tmp_path / "a.tif", scene(100, 100, [(10, 10, 40, 70)]))
    with rasterio.open(image) as ds:
        transform, crs = ds.transform, ds.crs
    x0, y0 = transform * (10, 10)
    x1, y1 = transform * (70, 40)
    from shapely.geometry import box

    footprints = gpd.GeoDataFrame({"osm_id": [7]}, geometry=[box(x0, y1, x1, y0)], crs=crs).to_crs(4326)
    footprints.to_file(tmp_path / "fp.geojson", driver="GeoJSON")
    out = tmp_path / "e.gpkg"
    result = runner.invoke(app, ["attributes", str(tmp_path / "fp.geojson"), str(image), "-o", str(out)])
    assert result.exit_code == 0, result.output
    gdf = pyogrio.read_dataframe(out, layer="buildings")
    row = gdf.iloc[0]
    assert row.osm_id == 7 and row.area_m2 == pytest.approx(30 * 60 * 0.09, rel=0.005)
    assert row.mean_r == pytest.approx(220) and row.mean_g == pytest.approx(30)
    assert row.width_m == pytest.approx(9.0, rel=0.01) and row.length_m == pytest.approx(18.0, rel=0.01)


def test_info_lists_rasters_and_problems(tmp_path):
    write_rgb(tmp_path / "a.tif", scene(64, 64, []))
    (tmp_path / "b.tif").write_bytes(b"junk")
    result = runner.invoke(app, ["info", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "a.tif" in result.output and "b.tif" in result.output
    # the suite's generic CPU (conftest.generic_cpu): what a run would choose, and why
    assert "inference: torch fp32 (CPU has neither amx_bf16 nor avx512_bf16" in result.output
    result = runner.invoke(app, ["info", str(tmp_path), "--device", "cpu", "--precision", "fp16"])
    assert result.exit_code == 0 and "fp16 is for CUDA" in result.output


def test_info_imports_no_torch(tmp_path):
    """``bldgseg info`` reads model cards and raster headers only: no torch, so it starts in well under 1 s."""
    image = write_rgb(tmp_path / "a.tif", scene(64, 64, []))
    code = textwrap.dedent(
        """
        import sys
        from typer.testing import CliRunner
        from bldgseg.cli import app
        result = CliRunner().invoke(app, ["info", sys.argv[1], "--device", "cpu"])
        assert result.exit_code == 0, result.output
        print("torch" in sys.modules)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code, str(image)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_models_lists_the_bundled_default():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0 and "aerial-buildings" in result.output and "deeplabv3plus" in result.output


def test_real_subprocess_on_sample_data_finds_the_real_buildings(tmp_path):
    """README's main path: the installed CLI, the bundled model, a real sample tile from an unseen city."""
    image = SAMPLE / "images" / "kampala_OAM-309606-261636-19.tif"
    out = tmp_path / "sample.gpkg"
    proc = subprocess.run(
        [sys.executable, "-m", "bldgseg", "run", str(image), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    buildings = pyogrio.read_dataframe(out, layer="buildings")
    assert buildings.crs.to_epsg() == 3857 and len(buildings) > 10
    labels = gpd.read_file(SAMPLE / "labels" / "kampala_buildings.geojson")
    with rasterio.open(image) as ds:
        shape, transform = (ds.height, ds.width), ds.transform
        truth = rasterize(labels.to_crs(ds.crs).geometry, out_shape=shape, transform=transform) > 0
    pred = rasterize(buildings.geometry, out_shape=shape, transform=transform) > 0
    iou = (pred & truth).sum() / (pred | truth).sum()
    assert iou > 0.5, f"pixel IoU {iou:.3f} against OpenStreetMap footprints"


def test_street_model_is_refused_for_aerial_runs(tmp_path):
    image = write_rgb(tmp_path / "a.tif", scene(64, 64, []))
    result = runner.invoke(app, ["run", str(image), "-o", str(tmp_path / "o.gpkg"), "--model", "facade"])
    assert result.exit_code == 4 and "bldgseg street" in result.output


def test_run_writes_geoparquet_and_per_image_flatgeobuf(tmp_path, red_roof_model):
    pytest.importorskip("pyarrow")
    image = write_rgb(tmp_path / "a.tif", scene(64, 64, [(10, 10, 30, 30)]))
    common = [str(image), "--model", str(red_roof_model), "--device", "cpu"]
    result = runner.invoke(app, ["run", *common, "-o", str(tmp_path / "b.parquet")])
    assert result.exit_code == 0, result.output
    assert len(gpd.read_parquet(tmp_path / "b.parquet")) == 1 and (tmp_path / "b.errors.csv").exists()
    result = runner.invoke(app, ["run", *common, "-o", str(tmp_path / "per"), "--per-image", "--format", "fgb"])
    assert result.exit_code == 0, result.output
    assert len(pyogrio.read_dataframe(tmp_path / "per" / "a.fgb")) == 1
    result = runner.invoke(app, ["run", *common, "-o", str(tmp_path / "b.shp")])
    assert result.exit_code == 2 and "unknown output format .shp" in result.output


def test_vectorize_writes_flatgeobuf(tmp_path):
    image = tmp_path / "mask.tif"
    with rasterio.open(
        image, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8", crs="EPSG:32636",
        transform=rasterio.transform.from_origin(500000, 100000, 0.3, 0.3),
    ) as ds:
        data = np.zeros((64, 64), np.uint8)
        data[10:30, 10:40] = 1
        ds.write(data, 1)
    result = runner.invoke(app, ["vectorize", str(image), "-o", str(tmp_path / "v.fgb"), "--simplify", "0"])
    assert result.exit_code == 0, result.output
    gdf = pyogrio.read_dataframe(tmp_path / "v.fgb")
    assert gdf.area_m2.round(2).tolist() == [pytest.approx(600 * 0.09)]
    assert (tmp_path / "v.run.json").exists()


def test_bad_input_exit_code_2(tmp_path, red_roof_model):
    """README: exit code 2 for bad input (here: an input that does not exist, a folder of unusable files)."""
    out = tmp_path / "o.gpkg"
    model = ["--model", str(red_roof_model)]
    result = runner.invoke(app, ["run", str(tmp_path / "missing.tif"), "-o", str(out), *model])
    assert result.exit_code == 2 and "missing.tif" in result.output, result.output
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.tif").write_bytes(b"not a tiff")
    result = runner.invoke(app, ["run", str(folder), "-o", str(out), *model])
    assert result.exit_code == 2 and "a.tif" in result.output, result.output
    assert not out.exists()


def missing_cuda_device() -> str:
    """A CUDA device this machine lacks: ``cuda:7`` (``cuda:99`` on a machine with 8 GPUs or more)."""
    import torch

    return "cuda:7" if not torch.cuda.is_available() or torch.cuda.device_count() < 8 else "cuda:99"


def test_device_problem_exit_code_5(tmp_path, red_roof_model):
    """README: exit code 5 for a device problem, before any work unit runs."""
    import torch

    image = write_rgb(tmp_path / "a.tif", scene(64, 64, [(10, 10, 30, 30)]))
    out = tmp_path / "o.gpkg"
    device = missing_cuda_device()
    for command in (["run", str(image), "-o", str(out)], ["predict", str(image), "-o", str(tmp_path / "p")]):
        result = runner.invoke(app, [*command, "--model", str(red_roof_model), "--device", device])
        assert result.exit_code == 5 and device in result.output, result.output
    run_args = ["run", str(image), "-o", str(out), "--model", str(red_roof_model)]
    if not torch.cuda.is_available():
        result = runner.invoke(app, [*run_args, "--device", "cuda"])
        assert result.exit_code == 5 and "CUDA is not available" in result.output, result.output
    result = runner.invoke(app, [*run_args, "--device", "tpu"])
    assert result.exit_code == 5 and "tpu" in result.output, result.output
    assert not out.exists()


def test_device_exit_code_of_a_real_process(tmp_path):
    """The entry point's own exit status (not only the test runner's): 5 for a device problem."""
    image = write_rgb(tmp_path / "a.tif", scene(64, 64, [(10, 10, 30, 30)]))
    command = [sys.executable, "-m", "bldgseg", "run", str(image), "-o", str(tmp_path / "o.gpkg")]
    proc = subprocess.run(
        [*command, "--device", missing_cuda_device()], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 5, proc.stderr
    assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr, proc.stderr


def test_json_progress_lines_for_programs(tmp_path, red_roof_model, monkeypatch):
    """``BLDGSEG_PROGRESS=json`` (the QGIS plugin): progress as JSON lines on stderr, no bars."""
    import json

    monkeypatch.setenv("BLDGSEG_PROGRESS", "json")
    image = write_rgb(tmp_path / "a.tif", scene(64, 64, [(10, 10, 30, 30)]))
    args = ["run", str(image), "-o", str(tmp_path / "o.gpkg"), "--model", str(red_roof_model), "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert events and all(e["event"] == "progress" and 0 <= e["done"] <= e["total"] for e in events)
    assert events[-1]["done"] == events[-1]["total"]
    assert "━" not in result.output  # no rich bar
