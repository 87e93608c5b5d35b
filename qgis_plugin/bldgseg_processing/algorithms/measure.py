"""Measure attributes: ``bldgseg attributes`` for existing footprints (OSM, cadastre…) from imagery."""

from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
)

from ..layers import load_output_styled, optional_raster_file, raster_files, vector_file
from .base import BldgsegAlgorithm


class MeasureAttributes(BldgsegAlgorithm):
    command = "attributes"
    algorithm_name = "measure_attributes"
    title = "Measure attributes"
    help_text = (
        "Adds area, width, length, orientation, colour, texture and (with a DSM/DTM or nDSM) height to existing "
        "footprints, measured from the imagery that covers each one."
    )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS's name)
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                "FOOTPRINTS", "Footprints", [QgsProcessing.TypeVectorPolygon]
            )
        )
        self.addParameter(
            QgsProcessingParameterMultipleLayers("IMAGES", "Imagery (RGB rasters)", QgsProcessing.TypeRaster)
        )
        for name, label in (("NDSM", "Normalised DSM"), ("DSM", "DSM (with a DTM)"), ("DTM", "DTM (with a DSM)")):
            self.addParameter(QgsProcessingParameterRasterLayer(name, f"{label} (optional)", optional=True))
        self.addParameter(
            QgsProcessingParameterVectorDestination("OUTPUT", "Measured footprints", QgsProcessing.TypeVectorPolygon)
        )

    def arguments(self, parameters, context, feedback):
        footprints, layer = vector_file(self, parameters, "FOOTPRINTS", context, feedback)
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        args = [footprints, *raster_files(self, parameters, "IMAGES", context), "--output", output, "--overwrite"]
        if layer:
            args += ["--layer", layer]
        for name in ("NDSM", "DSM", "DTM"):
            path = optional_raster_file(self, parameters, name, context)
            if path:
                args += [f"--{name.lower()}", path]
        return args, {"OUTPUT": output}

    def finish(self, results, parameters, context, feedback):
        load_output_styled(context, results["OUTPUT"], "buildings")
        return results
