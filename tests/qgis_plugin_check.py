"""Run the bldgseg Processing provider in headless QGIS (system Python with PyQGIS, not the project's venv).

Called by tests/test_qgis_plugin.py::test_provider_in_headless_qgis; by hand::

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis_plugin_check.py --plugin-dir qgis_plugin \\
        --bldgseg "$PWD/.venv/bin/bldgseg" --image sample_data/images/zanzibar_OAM-319297-270996-19.tif \\
        --footprints sample_data/labels/zanzibar_buildings.geojson --work /tmp/qgis_check --png /tmp/check.png

Registers the provider from the plugin folder, sets the executable, runs Extract buildings and Measure attributes
through ``processing.runAndLoadResults`` (outputs loaded into the project as the Toolbox does), a failing run, and
renders the styled buildings over the image. Prints one JSON line of findings last; exit status 0 unless it crashed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    for flag in ("--plugin-dir", "--bldgseg", "--image", "--footprints", "--work", "--png"):
        parser.add_argument(flag, required=True)
    args = parser.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    code = 0
    try:
        print(json.dumps(check(args)), flush=True)
    except Exception:  # noqa: BLE001 - report anything, then exit non-zero
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # exitQgis() can crash at interpreter teardown in scripts; nothing is left to save


def check(args: argparse.Namespace) -> dict:
    sys.path.append("/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing

    Processing.initialize()
    sys.path.insert(0, args.plugin_dir)
    import bldgseg_processing
    from processing.core.ProcessingConfig import ProcessingConfig

    plugin = bldgseg_processing.classFactory(None)
    plugin.initProcessing()
    ProcessingConfig.setSettingValue("BLDGSEG_EXECUTABLE", args.bldgseg)
    work = Path(args.work)
    found = {"algorithms": sorted(a.id() for a in plugin.provider.algorithms())}
    found["extract"], buildings = run_extract(args.image, work)
    found["probability"] = probability_layer(work / "masks")
    found["measure"] = run_measure(args.footprints, args.image, work)
    found["failure"] = failing_run(args.image, work)
    found["render"] = render(buildings, args.image, Path(args.png))
    return found


def project_layer(source_part: str):
    from qgis.core import QgsProject

    matches = [lyr for lyr in QgsProject.instance().mapLayers().values() if source_part in lyr.source()]
    if not matches:
        raise RuntimeError(f"no layer from {source_part} in the project")
    return matches[-1]


def describe_vector(layer) -> dict:
    renderer = layer.renderer()
    area = layer.fields().indexOf("area_m2")
    described = {
        "valid": layer.isValid(),
        "features": layer.featureCount(),
        "crs": layer.crs().authid(),
        "renderer": renderer.type(),
        "alias_area_m2": layer.attributeAlias(area) if area >= 0 else None,
        "display_expression": layer.displayExpression(),
    }
    if renderer.type() == "graduatedSymbol":
        described["attribute"] = renderer.classAttribute()
        described["ranges"] = len(renderer.ranges())
        described["breaks"] = [round(r.upperValue(), 3) for r in renderer.ranges()]
        described["colours"] = [r.symbol().symbolLayer(0).strokeColor().name() for r in renderer.ranges()]
    return described


def run_extract(image: str, work: Path):
    import processing

    out = work / "extract.gpkg"
    processing.runAndLoadResults(
        "bldgseg:extract_buildings",
        {"INPUT": [image], "DEVICE": 1, "OUTPUT": str(out), "PROBABILITY_MAPS": str(work / "masks")},
    )
    layer = project_layer(str(out))
    return describe_vector(layer), layer


def probability_layer(folder: Path) -> dict:
    layer = project_layer(str(folder))
    renderer = layer.renderer()
    shader = renderer.shader().rasterShaderFunction() if renderer.type() == "singlebandpseudocolor" else None
    stats = layer.dataProvider().bandStatistics(1)
    return {
        "valid": layer.isValid(),
        "renderer": renderer.type(),
        "ramp_items": [(round(i.value, 3), i.color.alpha()) for i in shader.colorRampItemList()] if shader else None,
        "value_range": [stats.minimumValue, stats.maximumValue],
        "scale": layer.dataProvider().bandScale(1),
    }


def run_measure(footprints: str, image: str, work: Path) -> dict:
    import processing

    out = work / "measure.gpkg"
    processing.runAndLoadResults(
        "bldgseg:measure_attributes", {"FOOTPRINTS": footprints, "IMAGES": [image], "OUTPUT": str(out)}
    )
    return describe_vector(project_layer(str(out)))


def failing_run(image: str, work: Path) -> str:
    import processing
    from qgis.core import QgsProcessingException

    try:
        processing.run(
            "bldgseg:extract_buildings",
            {"INPUT": [image], "MODEL": "no-such-model", "DEVICE": 1, "OUTPUT": str(work / "fail.gpkg")},
        )
    except QgsProcessingException as exc:
        return str(exc)
    return "(no error)"


def render(buildings, image: str, png: Path, size: int = 600) -> dict:
    """Draw the styled buildings over the image; count pixels in the style's class colours."""
    from qgis.core import QgsMapRendererSequentialJob, QgsMapSettings, QgsRasterLayer
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor

    raster = QgsRasterLayer(image, "image", "gdal")
    settings = QgsMapSettings()
    settings.setLayers([buildings, raster])  # first is drawn on top
    settings.setDestinationCrs(raster.crs())
    settings.setExtent(raster.extent())
    settings.setOutputSize(QSize(size, size))
    settings.setBackgroundColor(QColor(255, 255, 255))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    image_out = job.renderedImage()
    image_out.save(str(png), "PNG")
    colours = [r.symbol().symbolLayer(0).strokeColor() for r in buildings.renderer().ranges()]
    targets = [(c.red(), c.green(), c.blue()) for c in colours]
    style_pixels, per_class = 0, [0] * len(targets)
    for y in range(0, image_out.height(), 2):
        for x in range(0, image_out.width(), 2):
            pixel = QColor(image_out.pixel(x, y))
            rgb = (pixel.red(), pixel.green(), pixel.blue())
            for i, target in enumerate(targets):
                if sum(abs(a - b) for a, b in zip(rgb, target, strict=True)) <= 12:
                    style_pixels += 1
                    per_class[i] += 1
                    break
    return {"png": str(png), "style_pixels": style_pixels, "per_class": per_class, "errors": len(job.errors())}


if __name__ == "__main__":
    main()
