"""Open a bldgseg GeoPackage in headless QGIS, check it, and render it to a PNG.

Run with the system Python that has PyQGIS (not the project's venv)::

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 scripts/check_qgis.py out.gpkg [under.tif] [--png out.png]

Checks: the ``buildings`` layer is valid (CRS, features), its default style from ``layer_styles`` was applied
on load (single-symbol fill with the QML's colours and outline width, labels off), the attribute-only tables
open as geometry-less layers, and the rendered image shows the polygons (pixels in the fill colour).
Prints what it found; exits 1 on any failed check, 2 when PyQGIS is missing.
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gpkg", type=Path, help="GeoPackage written by bldgseg")
    parser.add_argument("raster", type=Path, nargs="?", help="raster to draw under the buildings")
    parser.add_argument("--png", type=Path, help="output image (default: <gpkg stem>_qgis.png in the cwd)")
    parser.add_argument("--size", type=int, default=800, help="image width and height in pixels")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    try:
        from qgis.core import QgsApplication
    except ImportError as exc:
        print(f"PyQGIS not importable ({exc}); install python3-qgis and run with /usr/bin/python3")
        return 2
    app = QgsApplication([], False)
    app.initQgis()
    try:
        failures = run_checks(args)
    finally:
        sys.stdout.flush()
    for failure in failures:
        print(f"FAIL: {failure}")
    print("OK" if not failures else f"{len(failures)} check(s) failed")
    sys.stdout.flush()
    # QgsApplication.exitQgis() can crash at interpreter teardown in scripts; nothing is left to save.
    os._exit(1 if failures else 0)


def run_checks(args: argparse.Namespace) -> list[str]:
    from qgis.core import Qgis, QgsRasterLayer, QgsVectorLayer

    failures: list[str] = []
    path = args.gpkg.resolve()
    if not path.is_file():
        return [f"{path}: no such file"]
    print(f"QGIS {Qgis.QGIS_VERSION}, GeoPackage {path}")

    expected = default_style_from_file(path)
    if expected is None:
        failures.append("layer_styles has no default (useAsDefault=1) style for 'buildings'")
    else:
        print(
            f"layer_styles: default style for buildings, fill {expected['color']}, "
            f"outline {expected['outline_color']} {expected['outline_width']} mm"
        )

    layer = QgsVectorLayer(f"{path}|layername=buildings", "buildings", "ogr")
    if not layer.isValid():
        return [*failures, "buildings layer is not valid in QGIS"]
    print(
        f"buildings: valid, {layer.featureCount()} features, {layer.crs().authid()}, "
        f"{layer.wkbType()}, fields {[f.name() for f in layer.fields()]}"
    )
    if not layer.crs().isValid():
        failures.append("buildings layer has no valid CRS")

    count, _ids, names, _descriptions, error = layer.listStylesInDatabase()
    print(f"styles QGIS lists in the database: {count} {list(names)} {error or ''}".rstrip())
    if expected is not None and "buildings" not in names:
        failures.append("QGIS does not list the 'buildings' style in layer_styles")

    renderer = layer.renderer()
    print(f"renderer: {renderer.type()}, labels enabled: {layer.labelsEnabled()}")
    if renderer.type() != "singleSymbol":
        failures.append(f"renderer is {renderer.type()!r}, expected the QML's 'singleSymbol'")
    elif expected is not None:
        symbol_layer = renderer.symbol().symbolLayer(0)
        fill = rgba(symbol_layer.color())
        outline = rgba(symbol_layer.strokeColor())
        width = symbol_layer.strokeWidth()
        print(f"applied style: fill {fill}, outline {outline} {width} mm")
        if fill != expected["color"]:
            failures.append(f"fill colour {fill} != QML {expected['color']} (default style not applied)")
        if outline != expected["outline_color"] or abs(width - float(expected["outline_width"])) > 1e-9:
            failures.append("outline differs from the QML")
    if layer.labelsEnabled():
        failures.append("labels are enabled; the QML turns them off")

    for name in other_tables(path):
        table = QgsVectorLayer(f"{path}|layername={name}", name, "ogr")
        ok = table.isValid() and not table.isSpatial()
        print(
            f"{name}: {'valid' if table.isValid() else 'INVALID'}, spatial={table.isSpatial()}, "
            f"{table.featureCount()} rows, fields {[f.name() for f in table.fields()][:8]}"
        )
        if not ok:
            failures.append(f"table {name!r} does not open as a geometry-less layer")

    layers = [layer]
    if args.raster:
        raster = QgsRasterLayer(str(args.raster.resolve()), "raster", "gdal")
        print(
            f"raster {args.raster}: valid={raster.isValid()}, {raster.width()}x{raster.height()}, "
            f"{raster.bandCount()} band(s), {raster.crs().authid()}"
        )
        if raster.isValid():
            layers.append(raster)  # last in the list is drawn first, i.e. under the buildings
        else:
            failures.append(f"raster {args.raster} is not valid in QGIS")

    png = args.png or Path.cwd() / f"{path.stem}_qgis.png"
    failures += render(layers, layer, png, args.size, expected)
    return failures


def render(layers: list, buildings, png: Path, size: int, expected: dict | None) -> list[str]:
    """Draw ``layers`` zoomed to the raster under them (else to the buildings), save ``png``, and look for
    fill-coloured pixels."""
    from qgis.core import QgsMapRendererParallelJob, QgsMapSettings
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor

    if buildings.featureCount() == 0:
        print("render: skipped, the buildings layer is empty")
        return []
    from qgis.core import QgsCoordinateTransform, QgsProject, QgsRasterLayer

    under = [lyr for lyr in layers if isinstance(lyr, QgsRasterLayer)]
    if under:
        to_buildings = QgsCoordinateTransform(under[0].crs(), buildings.crs(), QgsProject.instance())
        extent = to_buildings.transformBoundingBox(under[0].extent())
    else:
        extent = buildings.extent()
        extent.scale(1.1)
    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(buildings.crs())
    settings.setExtent(extent)
    settings.setOutputSize(QSize(size, size))
    settings.setBackgroundColor(QColor(255, 255, 255))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    if not image.save(str(png), "PNG"):
        return [f"could not save {png}"]
    errors = [f"{e.layerID}: {e.message}" for e in job.errors()]
    step = max(1, size // 200)
    painted = warm = 0
    for y in range(0, image.height(), step):
        for x in range(0, image.width(), step):
            c = QColor(image.pixel(x, y))
            if (c.red(), c.green(), c.blue()) != (255, 255, 255):
                painted += 1
            if c.red() > c.blue() + 60 and c.red() > 150:  # orange fill/outline over white or imagery
                warm += 1
    print(
        f"render: {png} ({image.width()}x{image.height()}), {painted} sampled pixels painted, "
        f"{warm} in the building colours, errors {errors or 'none'}"
    )
    failures = [f"render error {e}" for e in errors]
    if warm == 0 and expected is not None:
        failures.append("no building-coloured pixels in the rendered image")
    return failures


def default_style_from_file(path: Path) -> dict[str, str] | None:
    """The fill colour, outline colour and width of the default QML stored for ``buildings``."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = con.execute(
            "SELECT styleQML FROM layer_styles WHERE f_table_name = 'buildings' AND useAsDefault = 1 "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
    except sqlite3.Error:
        row = None
    finally:
        con.close()
    if row is None:
        return None
    props = {}
    for key in ("color", "outline_color", "outline_width"):
        match = re.search(rf'<prop k="{key}" v="([^"]*)"', row[0]) or re.search(
            rf'<Option name="{key}" type="QString" value="([^"]*)"', row[0]
        )
        props[key] = match.group(1) if match else ""
    return props


def other_tables(path: Path) -> list[str]:
    """Attribute-only tables registered in ``gpkg_contents``."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT table_name FROM gpkg_contents WHERE data_type = 'attributes'").fetchall()
    finally:
        con.close()
    return [r[0] for r in rows]


def rgba(color) -> str:
    return f"{color.red()},{color.green()},{color.blue()},{color.alpha()}"


if __name__ == "__main__":
    sys.exit(main())
