"""Evaluation against hand-built cases in UTM 36N with exactly known answers; real files in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import typer
from PIL import Image
from rasterio.features import rasterize
from rasterio.transform import from_origin
from shapely.geometry import box
from typer.testing import CliRunner

from bldgseg.cli.evaluate import evaluate_command
from bldgseg.errors import InputError, OutputExistsError
from bldgseg.evaluation import (
    attribute_errors,
    evaluate,
    match_polygons,
    pixel_metrics,
    summarize_attribute_errors,
)
from bldgseg.evaluation.report import MERGED_RGB, SPLIT_RGB
from tests.conftest import write_rgb

UTM = "EPSG:32636"
X0, Y0 = 500000.0, 100000.0  # on the zone's central meridian, near the equator
TRUTH_RGB = (0, 255, 255)
PRED_RGB = (255, 0, 255)


def sq(x0: float, y0: float, x1: float, y1: float):
    """A rectangle in metres east/north of (X0, Y0)."""
    return box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


def frame(*geoms, crs: str = UTM, **columns) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(columns, geometry=list(geoms), crs=crs)


# -------------------- polygon matching


def test_square_offset_by_2_m_matches_with_iou_two_thirds():
    m = match_polygons(frame(sq(2, 0, 12, 10)), frame(sq(0, 0, 10, 10)))
    assert m.tp == 1 and m.fp == 0 and m.fn == 0
    assert m.matches["iou"].iloc[0] == pytest.approx(80 / 120, abs=1e-12)
    assert (m.precision, m.recall, m.f1) == (1.0, 1.0, 1.0)
    assert m.count_error == 0 and m.count_error_relative == 0.0


def test_square_offset_by_5_m_is_one_false_positive_and_one_false_negative():
    pred, truth = frame(sq(5, 0, 15, 10)), frame(sq(0, 0, 10, 10))
    m = match_polygons(pred, truth)
    assert (m.tp, m.fp, m.fn) == (0, 1, 1)
    assert m.false_positives == [0] and m.false_negatives == [0]
    assert (m.precision, m.recall, m.f1) == (0.0, 0.0, 0.0)
    lenient = match_polygons(pred, truth, iou_threshold=0.3)  # IoU = 50/150 = 1/3
    assert lenient.tp == 1 and lenient.matches["iou"].iloc[0] == pytest.approx(1 / 3, abs=1e-12)


def test_split_building_halves_have_iou_exactly_one_half_and_the_first_matches():
    truth = frame(sq(0, 0, 20, 10))
    pred = frame(sq(0, 0, 10, 10), sq(10, 0, 20, 10))
    m = match_polygons(pred, truth)
    assert m.matches.to_dict("records") == [{"pred": 0, "truth": 0, "iou": 0.5}]  # IoU >= 0.5 matches
    assert m.false_positives == [1] and m.false_negatives == []
    assert m.split == [0] and m.merged == []
    assert (m.precision, m.recall) == (0.5, 1.0) and m.f1 == pytest.approx(2 / 3)
    assert match_polygons(pred, truth, iou_threshold=0.51).tp == 0


def test_merged_prediction_over_two_truths():
    truth = frame(sq(0, 0, 10, 10), sq(12, 0, 22, 10))
    pred = frame(sq(0, 0, 22, 10))  # IoU with each = 100/220 < 0.5
    m = match_polygons(pred, truth)
    assert m.merged == [0] and m.split == []
    assert (m.tp, m.fp, m.fn) == (0, 1, 2)
    assert m.count_error == -1 and m.count_error_relative == -0.5
    metrics = m.metrics()
    assert metrics["merged"] == 1 and metrics["split"] == 0 and metrics["mean_iou"] is None


def test_far_unmatched_prediction_lowers_precision_exactly():
    squares = [sq(0, 0, 10, 10), sq(20, 0, 30, 10), sq(40, 0, 50, 10)]
    truth = frame(*squares)
    pred = frame(*squares, sq(1000, 1000, 1010, 1010))
    m = match_polygons(pred, truth)
    assert (m.tp, m.fp, m.fn) == (3, 1, 0)
    assert m.false_positives == [3]
    assert m.precision == 0.75 and m.recall == 1.0 and m.f1 == pytest.approx(6 / 7, abs=1e-15)
    assert m.count_error == 1 and m.count_error_relative == pytest.approx(1 / 3)


def test_geographic_inputs_are_matched_in_utm():
    pred = frame(sq(2, 0, 12, 10)).to_crs(4326)
    truth = frame(sq(0, 0, 10, 10)).to_crs(4326)
    m = match_polygons(pred, truth)
    assert m.tp == 1 and m.matches["iou"].iloc[0] == pytest.approx(2 / 3, abs=1e-6)


def test_match_rejects_bad_threshold_and_duplicate_labels():
    with pytest.raises(InputError, match="iou_threshold"):
        match_polygons(frame(sq(0, 0, 1, 1)), frame(sq(0, 0, 1, 1)), iou_threshold=0)
    dup = frame(sq(0, 0, 1, 1), sq(2, 0, 3, 1)).set_index(np.array([7, 7]))
    with pytest.raises(InputError, match="not unique"):
        match_polygons(dup, frame(sq(0, 0, 1, 1)))


def test_attribute_errors_of_a_matched_pair():
    truth = frame(sq(0, 0, 10, 10))
    pred = frame(sq(0, 0, 12, 12))  # IoU 100/144; area +44 %, width +20 %
    m = match_polygons(pred, truth)
    errors = attribute_errors(pred, truth, m)
    assert errors["area_rel_error"].iloc[0] == pytest.approx(0.44, abs=1e-9)
    assert errors["width_rel_error"].iloc[0] == pytest.approx(0.2, abs=1e-9)
    summary = summarize_attribute_errors(errors)
    assert summary["pairs"] == 1
    assert summary["area_abs_rel_error_mean"] == pytest.approx(0.44, abs=1e-9)
    assert summary["width_rel_error_median"] == pytest.approx(0.2, abs=1e-9)
    empty = summarize_attribute_errors(attribute_errors(pred, truth, match_polygons(pred.iloc[:0], truth)))
    assert empty["pairs"] == 0 and empty["area_rel_error_median"] is None


# -------------------- pixel metrics


def test_pixel_metrics_of_rasterized_squares():
    transform = from_origin(X0, Y0 + 30, 1.0, 1.0)  # 1 m pixels, 30 x 30

    def burn(geom):
        return rasterize([(geom, 1)], out_shape=(30, 30), transform=transform).astype(bool)

    truth, pred = burn(sq(5, 5, 15, 15)), burn(sq(7, 5, 17, 15))
    result = pixel_metrics(pred, truth)
    assert {k: result[k] for k in ("tp", "fp", "fn", "tn")} == {"tp": 80, "fp": 20, "fn": 20, "tn": 780}
    assert result["iou"] == pytest.approx(80 / 120) and result["f1"] == pytest.approx(0.8)
    assert result["precision"] == pytest.approx(0.8) and result["recall"] == pytest.approx(0.8)

    valid = np.zeros((30, 30), bool)
    valid[:, :15] = True  # the 2 m of prediction east of x = 15 m are not counted
    masked = pixel_metrics(pred, truth, valid)
    assert (masked["tp"], masked["fp"], masked["fn"], masked["tn"]) == (80, 0, 20, 350)
    assert masked["precision"] == 1.0 and masked["recall"] == 0.8

    nothing = pixel_metrics(np.zeros((3, 3), bool), np.zeros((3, 3), bool))
    assert nothing["iou"] is None and nothing["tn"] == 9
    with pytest.raises(InputError, match="same grid"):
        pixel_metrics(np.zeros((3, 3), bool), np.zeros((3, 4), bool))


# -------------------- files


def _scene(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A 0.5 m GeoTIFF (60 x 40 m, east 10 m invalid), a `bldgseg run` GeoPackage and GeoJSON truth (WGS84)."""
    valid = np.ones((80, 120), bool)
    valid[:, 100:] = False  # x in [50, 60) m
    rgb = np.full((3, 80, 120), 90, np.uint8)
    image = write_rgb(tmp_path / "scene.tif", rgb, transform=from_origin(X0, Y0 + 40, 0.5, 0.5), mask=valid)
    truth = frame(
        sq(5, 5, 15, 15),  # T1
        sq(25, 5, 35, 15),  # T2
        sq(45, 5, 55, 15),  # T3: missed, half of it in the invalid strip
        sq(100, 100, 110, 110),  # outside the image: not counted
    ).to_crs(4326)
    gt = tmp_path / "truth.geojson"
    pyogrio.write_dataframe(truth, gt, driver="GeoJSON")
    pred = frame(
        sq(7, 5, 17, 15),  # P1 ~ T1, IoU 80/120
        sq(25, 5, 37, 17),  # P2 ~ T2, IoU 100/144, area +44 %, width +20 %
        sq(30, 25, 40, 35),  # P4: false positive
        source_image=[str(image)] * 3,
        confidence=[0.9, 0.8, 0.7],
    )
    gpkg = tmp_path / "run.gpkg"
    pyogrio.write_dataframe(pred, gpkg, layer="buildings", driver="GPKG")
    return image, gpkg, gt


def test_evaluate_run_geopackage_against_geojson_truth(tmp_path):
    image, gpkg, gt = _scene(tmp_path)
    report = evaluate(gpkg, gt)
    assert list(report.per_image) == ["scene.tif"]
    # pixels (0.5 m, 4 per m²): TP 320 + 400; FP 80 + 176 + 400; FN 80 + 200 (the valid half of T3)
    expected_pixel = {"tp": 720, "fp": 656, "fn": 280, "tn": 8000 - 1656}
    pixel = report.overall["pixel"]
    assert {k: pixel[k] for k in expected_pixel} == expected_pixel
    assert pixel["iou"] == pytest.approx(720 / 1656) and pixel["recall"] == pytest.approx(0.72)
    polygon = report.overall["polygon"]
    assert {k: polygon[k] for k in ("n_pred", "n_truth", "tp", "fp", "fn", "merged", "split")} == {
        "n_pred": 3,
        "n_truth": 3,
        "tp": 2,
        "fp": 1,
        "fn": 1,
        "merged": 0,
        "split": 0,
    }
    assert polygon["f1"] == pytest.approx(2 / 3) and polygon["count_error"] == 0
    assert polygon["mean_iou"] == pytest.approx((80 / 120 + 100 / 144) / 2, abs=1e-6)
    attrs = report.overall["attributes"]
    assert attrs["pairs"] == 2
    assert attrs["area_rel_error_median"] == pytest.approx(0.22, abs=1e-6)
    assert attrs["width_abs_rel_error_mean"] == pytest.approx(0.1, abs=1e-6)
    assert report.per_image["scene.tif"]["pixel"] == report.overall["pixel"]

    out = tmp_path / "report"
    report.to_json(out / "report.json")
    data = json.loads((out / "report.json").read_text())
    assert data["overall"]["pixel"]["tp"] == 720 and data["per_image"]["scene.tif"]["polygon"]["fn"] == 1
    assert data["overall"]["polygon"]["count_error_relative"] == 0.0

    md = report.to_markdown(out / "report.md").read_text()
    assert "| pixel IoU | 0.435 |" in md and "![scene.tif](overlays/scene.png)" in md and "cyan" in md
    html = report.to_html(out / "report.html").read_text()
    assert '<img src="overlays/scene.png"' in html
    with Image.open(out / "overlays" / "scene.png") as png:
        assert png.size == (480, 320)  # the image's 3:2 aspect; small images are enlarged x4 towards 512
        pixels = np.asarray(png.convert("RGB")).reshape(-1, 3)
    assert (pixels == TRUTH_RGB).all(axis=1).any() and (pixels == PRED_RGB).all(axis=1).any()


def test_evaluate_with_images_given_and_missing_source_image(tmp_path):
    image, gpkg, gt = _scene(tmp_path)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    image.rename(moved / image.name)
    with pytest.raises(InputError, match="--images"):
        evaluate(gpkg, gt)
    report = evaluate(gpkg, gt, images=[moved])  # matched by file name
    assert report.overall["polygon"]["tp"] == 2 and report.overall["pixel"]["tp"] == 720


def _write_band(path: Path, band: np.ndarray, transform, scale: float | None = None) -> Path:
    profile = dict(driver="GTiff", width=band.shape[1], height=band.shape[0], count=1, dtype="uint8")
    with rasterio.open(path, "w", crs=UTM, transform=transform, **profile) as ds:
        ds.write(band, 1)
        if scale is not None:
            ds.scales = (scale,)
    return path


def test_mask_rasters_as_predictions_and_as_truth(tmp_path):
    transform = from_origin(X0, Y0 + 20, 1.0, 1.0)  # 1 m pixels, 40 x 20
    truth = np.zeros((20, 40), np.uint8)
    truth[5:15, 2:12] = 255  # A
    truth[5:15, 20:30] = 255  # B
    prob = np.zeros((20, 40), np.uint8)
    prob[5:15, 4:14] = 200  # A shifted 2 m east: IoU 80/120
    prob[5:15, 20:30] = 230  # B exact
    prob[2:6, 34:38] = 180  # C: false positive, 16 px
    prob[16:19, 15:18] = 76  # 0.3: below the 0.5 cut
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    _write_band(tmp_path / "pred" / "scene.probability.tif", prob, transform, scale=1 / 255)
    gt = _write_band(tmp_path / "gt" / "scene.mask.tif", truth, transform)

    report = evaluate(tmp_path / "pred", gt)
    assert list(report.per_image) == ["scene.probability.tif"]
    pixel = report.overall["pixel"]
    assert (pixel["tp"], pixel["fp"], pixel["fn"], pixel["tn"]) == (180, 36, 20, 800 - 236)
    polygon = report.overall["polygon"]
    assert (polygon["n_pred"], polygon["n_truth"], polygon["tp"], polygon["fp"], polygon["fn"]) == (
        3,
        2,
        2,
        1,
        0,
    )
    assert polygon["precision"] == pytest.approx(2 / 3) and polygon["f1"] == pytest.approx(0.8)
    assert polygon["mean_iou"] == pytest.approx((80 / 120 + 1) / 2)
    report.to_markdown(tmp_path / "out" / "report.md")
    with Image.open(tmp_path / "out" / "overlays" / "scene.probability.png") as png:
        assert png.size == (480, 240)

    # with the imagery: its name, its valid mask (west 10 m invalid) and its pixels as background
    valid = np.ones((20, 40), bool)
    valid[:, :10] = False
    write_rgb(tmp_path / "scene.tif", np.full((3, 20, 40), 90, np.uint8), transform=transform, mask=valid)
    report = evaluate(tmp_path / "pred", gt, images=[tmp_path / "scene.tif"])
    assert list(report.per_image) == ["scene.tif"]
    pixel = report.overall["pixel"]
    # A: only columns 10..13 remain -> TP 2 cols (10, 11) x 10, FP 2 cols (12, 13) x 10, FN 0
    assert (pixel["tp"], pixel["fp"], pixel["fn"]) == (20 + 100, 20 + 16, 0)
    assert report.views[0].kind == "rgb"


def test_vector_predictions_against_mask_truth(tmp_path):
    transform = from_origin(X0, Y0 + 20, 1.0, 1.0)
    truth = np.zeros((20, 40), np.uint8)
    truth[5:15, 2:12] = 1
    gt = _write_band(tmp_path / "truth.tif", truth, transform)
    image = write_rgb(tmp_path / "img.tif", np.full((3, 20, 40), 90, np.uint8), transform=transform)
    pred = frame(sq(4, 5, 14, 15), source_image=[str(image)])
    gpkg = tmp_path / "p.gpkg"
    pyogrio.write_dataframe(pred, gpkg, layer="buildings")
    report = evaluate(gpkg, gt)
    assert report.overall["polygon"]["tp"] == 1
    assert report.overall["polygon"]["mean_iou"] == pytest.approx(80 / 120)
    assert (report.overall["pixel"]["tp"], report.overall["pixel"]["fp"]) == (80, 20)


def test_building_cut_by_the_image_edge_is_compared_with_its_visible_part(tmp_path):
    image = write_rgb(
        tmp_path / "img.tif", np.full((3, 20, 20), 90, np.uint8), transform=from_origin(X0, Y0 + 20, 1, 1)
    )
    truth = frame(sq(-6, 5, 4, 15))  # 4 of its 10 m inside the image, representative point outside
    pred = frame(sq(0, 5, 4, 15), source_image=[str(image)])  # what the image shows of it
    gt, gpkg = tmp_path / "t.gpkg", tmp_path / "p.gpkg"
    pyogrio.write_dataframe(truth, gt, layer="footprints")
    pyogrio.write_dataframe(pred, gpkg, layer="buildings")
    clip = evaluate(gpkg, gt).overall["polygon"]
    assert (clip["tp"], clip["fp"], clip["fn"], clip["mean_iou"]) == (1, 0, 0, 1.0)
    point = evaluate(gpkg, gt, edge_rule="point").overall["polygon"]
    assert (point["n_truth"], point["tp"], point["fp"]) == (0, 0, 1)
    with pytest.raises(InputError, match="edge_rule"):
        evaluate(gpkg, gt, edge_rule="centroid")


# -------------------- CLI


def test_evaluate_command_writes_reports_and_refuses_to_overwrite(tmp_path):
    _image, gpkg, gt = _scene(tmp_path)
    app = typer.Typer()
    app.command("evaluate")(evaluate_command)
    runner = CliRunner()
    out = tmp_path / "evaluation"
    result = runner.invoke(app, [str(gpkg), str(gt), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "pixel IoU" in result.output and "0.435" in result.output and "merged" in result.output
    for name in ("report.json", "report.md", "report.html", "overlays/scene.png"):
        assert (out / name).is_file(), name
    again = runner.invoke(app, [str(gpkg), str(gt), "--out", str(out)])
    assert isinstance(again.exception, OutputExistsError) and "--overwrite" in str(again.exception)
    forced = runner.invoke(
        app, [str(gpkg), str(gt), "--out", str(out), "--overwrite", "--iou-threshold", "0.7"]
    )
    assert forced.exit_code == 0, forced.output
    assert json.loads((out / "report.json").read_text())["overall"]["polygon"]["tp"] == 0


def test_invalid_truth_polygons_are_repaired_before_clipping():
    """A self-intersecting (bow-tie) footprint crossing the image edge must not crash the clip."""
    from shapely.geometry import Polygon

    from bldgseg.evaluation import units as ev

    bowtie = Polygon([(0, 0), (10, 10), (10, 0), (0, 10), (0, 0)])
    assert not bowtie.is_valid
    frame = gpd.GeoDataFrame(geometry=[bowtie], crs="EPSG:32636")

    class Grid:
        def extent(self):
            return box(5, -5, 20, 20)

    clipped = ev.clip_to_grid(frame, Grid())
    assert len(clipped) == 1 and clipped.geometry.iloc[0].is_valid
    assert clipped.geometry.iloc[0].area == pytest.approx(25.0)


def test_overlay_marks_merged_predictions_and_split_truths(tmp_path):
    rgb = np.full((3, 80, 120), 90, np.uint8)
    image = write_rgb(tmp_path / "scene.tif", rgb, transform=from_origin(X0, Y0 + 40, 0.5, 0.5))
    truth = frame(sq(5, 5, 15, 15), sq(15, 5, 25, 15), sq(35, 5, 55, 15)).to_crs(4326)
    gt = tmp_path / "truth.geojson"
    pyogrio.write_dataframe(truth, gt, driver="GeoJSON")
    # one outline over the two touching houses; the long building cut into two halves
    pred = frame(sq(5, 5, 25, 15), sq(35, 5, 45, 15), sq(45, 5, 55, 15), source_image=[str(image)] * 3)
    gpkg = tmp_path / "run.gpkg"
    pyogrio.write_dataframe(pred, gpkg, layer="buildings", driver="GPKG")
    report = evaluate(gpkg, gt)
    polygon = report.overall["polygon"]
    assert polygon["merged"] == 1 and polygon["split"] == 1 and polygon["count_error"] == 0
    (png_path,) = report.write_overlays(tmp_path / "overlays").values()
    with Image.open(png_path) as png:
        pixels = np.asarray(png.convert("RGB")).reshape(-1, 3)
    assert (pixels == MERGED_RGB).all(axis=1).any() and (pixels == SPLIT_RGB).all(axis=1).any()
    assert "orange" in report.to_markdown(tmp_path / "report.md").read_text()
