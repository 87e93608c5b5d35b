"""The QGIS styles shipped in bldgseg/styles: what a reviewer sees when a layer opens (checked as XML here;
tests/test_qgis_plugin.py loads and renders them in real QGIS where PyQGIS is installed)."""

import xml.etree.ElementTree as ET

import pytest

from bldgseg.pipeline.outputs import BUILDING_COLUMNS
from bldgseg.qgis_styles import (
    building_style,
    footprint_style,
    probability_style,
    style_for_columns,
    write_probability_style,
)


def rgb(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",")[:3])


def test_buildings_graduated_by_confidence_low_in_red():
    renderer = ET.fromstring(building_style().encode()).find("renderer-v2")
    assert renderer.get("type") == "graduatedSymbol" and renderer.get("attr") == "confidence"
    ranges = [(float(r.get("lower")), float(r.get("upper")), r.get("symbol")) for r in renderer.iter("range")]
    assert [(lo, hi) for lo, hi, _ in ranges] == [(0.0, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.0)]
    fills = {}
    for symbol in renderer.find("symbols"):
        props = {p.get("k"): p.get("v") for p in symbol.find("layer").findall("prop")}
        fills[symbol.get("name")] = rgb(props["outline_color"])
    colours = [fills[name] for _, _, name in ranges]
    red, green = colours[0], colours[-1]
    assert red[0] > 200 and red[1] < 60 and red[2] < 60  # lowest confidence stands out in red
    assert green[1] > green[0] and green[1] > green[2]  # highest in green
    assert len(set(colours)) == 5


def test_field_labels_and_rounding_for_the_identify_form():
    for qml in (building_style(), footprint_style()):
        root = ET.fromstring(qml.encode())
        aliases = {a.get("field"): a.get("name") for a in root.iter("alias")}
        assert aliases["area_m2"] == "Area (m²)" and aliases["height_m"] == "Height (m)"
        assert aliases["confidence"].startswith("Confidence")
        assert set(BUILDING_COLUMNS) <= set(aliases), set(BUILDING_COLUMNS) - set(aliases)
        precision = {
            f.get("name"): int(f.find(".//Option[@name='Precision']").get("value"))
            for f in root.find("fieldConfiguration")
        }
        assert precision["area_m2"] == 1 and precision["confidence"] == 2
        assert "area_m2" in root.find("previewExpression").text
        assert "area_m2" in root.find("mapTip").text


def test_style_follows_the_columns():
    assert style_for_columns(["area_m2", "confidence"]) == building_style()
    assert style_for_columns(["area_m2", "osm_id"]) == footprint_style()
    renderer = ET.fromstring(footprint_style().encode()).find("renderer-v2")
    assert renderer.get("type") == "singleSymbol"  # no confidence to grade: every footprint drawn


def test_probability_ramp_transparent_when_unlikely(tmp_path):
    root = ET.fromstring(probability_style().encode())
    renderer = root.find("pipe/rasterrenderer")
    assert renderer.get("type") == "singlebandpseudocolor" and renderer.get("band") == "1"
    items = [(float(i.get("value")), int(i.get("alpha"))) for i in renderer.iter("item")]
    assert items[0] == (0.0, 0) and items[-1][0] == pytest.approx(1.0) and items[-1][1] == 255
    raster = tmp_path / "a.probability.tif"
    raster.write_bytes(b"")
    sidecar = write_probability_style(raster)
    assert sidecar == tmp_path / "a.probability.qml" and sidecar.read_text(encoding="utf-8") == probability_style()
