"""Open a bldgseg GeoPackage in headless QGIS, check it, and render it to a PNG.

Run with the system Python that has PyQGIS (not the project's venv)::

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 scripts/check_qgis.py out.gpkg [under.tif] [--png out.png]

Checks: the ``buildings`` layer is valid (CRS, features), its default style from ``layer_styles`` was applied
on load (the QML's renderer, e.g. graduated on ``confidence``, with its outline colours; labels off), the
attribute-only tables open as geometry-less layers, and the rendered image shows the polygons (pixels in the
style's outline colours).
Prints what it found; exits 1 on any failed check, 2 when PyQGIS is missing.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import xml.etree.ElementTree as ET
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
    from qgis.core import Qgis, QgsRasterLayer, QgsRenderContext, QgsVectorLayer

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
            f"layer_styles: default style for buildings, {expected['renderer']} "
            f"{expected['attribute'] or ''}, outlines {expected['outlines']}"
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
    if expected is not None:
        if renderer.type() != expected["renderer"]:
            failures.append(f"renderer is {renderer.type()!r}, expected the QML's {expected['renderer']!r}")
        else:
            symbols = renderer.symbols(QgsRenderContext())
            outlines = sorted(rgba(symbol.symbolLayer(0).strokeColor()) for symbol in symbols)
            attribute = renderer.classAttribute() if hasattr(renderer, "classAttribute") else ""
            print(f"applied style: outlines {outlines}, attribute {attribute or '-'}")
            if outlines != sorted(expected["outlines"]) or attribute != expected["attribute"]:
                failures.append("renderer differs from the QML (default style not applied)")
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
    targets = [tuple(int(v) for v in c.split(",")[:3]) for c in (expected or {}).get("outlines", [])]
    painted = styled = 0
    for y in range(0, image.height(), step):
        for x in range(0, image.width(), step):
            c = QColor(image.pixel(x, y))
            rgb = (c.red(), c.green(), c.blue())
            if rgb != (255, 255, 255):
                painted += 1
            if any(sum(abs(a - b) for a, b in zip(rgb, t, strict=True)) <= 12 for t in targets):
                styled += 1
    print(
        f"render: {png} ({image.width()}x{image.height()}), {painted} sampled pixels painted, "
        f"{styled} in the style's outline colours, errors {errors or 'none'}"
    )
    failures = [f"render error {e}" for e in errors]
    if styled == 0 and expected is not None:
        failures.append("no pixels in the style's colours in the rendered image")
    return failures


def default_style_from_file(path: Path) -> dict | None:
    """Renderer type, classification attribute and symbol outline colours of the default QML for ``buildings``."""
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
    renderer = ET.fromstring(row[0].encode()).find("renderer-v2")
    outlines = [
        {p.get("k"): p.get("v") for p in layer.findall("prop")}["outline_color"]
        for layer in renderer.findall("symbols/symbol/layer")
    ]
    return {"renderer": renderer.get("type"), "attribute": renderer.get("attr") or "", "outlines": outlines}


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
