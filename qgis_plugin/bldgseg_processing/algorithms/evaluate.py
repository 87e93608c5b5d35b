"""Evaluate: ``bldgseg evaluate`` of predicted buildings against reference footprints, with an HTML report."""

from __future__ import annotations

import json
import os

from qgis.core import (
    QgsProcessing,
    QgsProcessingOutputHtml,
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
)

from ..layers import raster_files, vector_file
from .base import BldgsegAlgorithm, given

EDGE_RULES = ["clip", "point"]


class Evaluate(BldgsegAlgorithm):
    command = "evaluate"
    algorithm_name = "evaluate"
    title = "Evaluate"
    help_text = (
        "Scores predicted buildings (a bldgseg output, possibly corrected) against reference footprints on the "
        "same images: pixel IoU, polygon precision, recall and F1 at an IoU threshold, merged and split "
        "buildings. Writes report.html (with overlay pictures), report.md and report.json to the report folder."
    )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS's name)
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                "PREDICTIONS", "Predicted buildings", [QgsProcessing.TypeVectorPolygon]
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                "TRUTH", "Reference footprints (ground truth)", [QgsProcessing.TypeVectorPolygon]
            )
        )
        self.addParameter(
            QgsProcessingParameterMultipleLayers(
                "IMAGES",
                "Imagery the predictions came from (default: their source_image column)",
                QgsProcessing.TypeRaster,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                "IOU_THRESHOLD",
                "Polygon match at IoU ≥",
                QgsProcessingParameterNumber.Double,
                0.5,
                minValue=0.0,
                maxValue=1.0,
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                "EDGE_RULE", "Buildings cut by an image edge", options=EDGE_RULES, defaultValue=0
            )
        )
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Report folder"))
        self.addOutput(QgsProcessingOutputHtml("REPORT", "Evaluation report"))
        self.addOutput(QgsProcessingOutputNumber("PIXEL_IOU", "Pixel IoU"))
        self.addOutput(QgsProcessingOutputNumber("POLYGON_F1", "Polygon F1"))

    def arguments(self, parameters, context, feedback):
        pred, pred_layer = vector_file(self, parameters, "PREDICTIONS", context, feedback)
        truth, truth_layer = vector_file(self, parameters, "TRUTH", context, feedback)
        folder = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        args = [pred, truth, "--out", folder, "--overwrite"]
        if pred_layer:
            args += ["--pred-layer", pred_layer]
        if truth_layer:
            args += ["--gt-layer", truth_layer]
        if given(parameters, "IMAGES"):
            for image in raster_files(self, parameters, "IMAGES", context):
                args += ["--images", image]
        args += ["--iou-threshold", repr(self.parameterAsDouble(parameters, "IOU_THRESHOLD", context))]
        args += ["--edge-rule", EDGE_RULES[self.parameterAsEnum(parameters, "EDGE_RULE", context)]]
        return args, {"OUTPUT": folder}

    def finish(self, results, parameters, context, feedback):
        folder = results["OUTPUT"]
        results["REPORT"] = os.path.join(folder, "report.html")
        with open(os.path.join(folder, "report.json"), encoding="utf-8") as stream:
            overall = json.load(stream).get("overall", {})
        results["PIXEL_IOU"] = overall.get("pixel", {}).get("iou")
        results["POLYGON_F1"] = overall.get("polygon", {}).get("f1")
        return results
