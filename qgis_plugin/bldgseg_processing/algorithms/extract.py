"""Extract buildings: ``bldgseg run`` on raster layers, the buildings loaded styled by confidence."""

from __future__ import annotations

import glob
import os

from qgis.core import (
    QgsProcessing,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
)

from ..layers import load_output_styled, load_rasters_styled, optional_raster_file, raster_files
from .base import BldgsegAlgorithm, advanced, given

DEVICES = ["auto", "cpu", "cuda"]
REGULARIZE = ["model's default", "yes", "no"]


class ExtractBuildings(BldgsegAlgorithm):
    command = "run"
    algorithm_name = "extract_buildings"
    title = "Extract buildings"
    help_text = (
        "Segments buildings in aerial or drone imagery (raster layers or files; touching files are mosaicked) "
        "and writes polygons with area, width, length, height (with an nDSM), colour, texture and "
        "<i>confidence</i> to a GeoPackage. The layer opens coloured by confidence: red buildings (under 0.6) "
        "are the ones to check first."
    )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS's name)
        self.addParameter(
            QgsProcessingParameterMultipleLayers("INPUT", "Imagery (RGB rasters)", QgsProcessing.TypeRaster)
        )
        self.addParameter(
            QgsProcessingParameterString(
                "MODEL", "Model (bundled name or path to a .safetensors)", defaultValue="aerial-buildings"
            )
        )
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", options=DEVICES, defaultValue=0))
        self.addParameter(
            QgsProcessingParameterNumber(
                "THRESHOLD",
                "Probability threshold (empty: the model's)",
                QgsProcessingParameterNumber.Double,
                optional=True,
                minValue=0.0,
                maxValue=1.0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                "MIN_AREA",
                "Smallest building, m² (empty: the model's)",
                QgsProcessingParameterNumber.Double,
                optional=True,
                minValue=0.0,
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum("REGULARIZE", "Square off outlines", options=REGULARIZE, defaultValue=0)
        )
        self.addParameter(
            QgsProcessingParameterRasterLayer("NDSM", "Normalised DSM for height_m (optional)", optional=True)
        )
        self.addParameter(
            advanced(QgsProcessingParameterBoolean("TTA", "Average over flips (4x slower)", defaultValue=False))
        )
        self.addParameter(
            advanced(
                QgsProcessingParameterNumber(
                    "THREADS", "Work units in parallel", QgsProcessingParameterNumber.Integer, 1, minValue=1
                )
            )
        )
        self.addParameter(
            QgsProcessingParameterFolderDestination(
                "PROBABILITY_MAPS", "Probability maps (COG) folder", optional=True, createByDefault=False
            )
        )
        self.addParameter(
            QgsProcessingParameterVectorDestination(
                "OUTPUT", "Buildings", QgsProcessing.TypeVectorPolygon, createByDefault=True
            )
        )

    def arguments(self, parameters, context, feedback):
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        args = [*raster_files(self, parameters, "INPUT", context), "--output", output, "--overwrite"]
        args += ["--model", self.parameterAsString(parameters, "MODEL", context) or "aerial-buildings"]
        args += ["--device", DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)]]
        if given(parameters, "THRESHOLD"):
            args += ["--threshold", repr(self.parameterAsDouble(parameters, "THRESHOLD", context))]
        if given(parameters, "MIN_AREA"):
            args += ["--min-area", repr(self.parameterAsDouble(parameters, "MIN_AREA", context))]
        regularize = self.parameterAsEnum(parameters, "REGULARIZE", context)
        if regularize:
            args.append("--regularize" if regularize == 1 else "--no-regularize")
        ndsm = optional_raster_file(self, parameters, "NDSM", context)
        if ndsm:
            args += ["--ndsm", ndsm]
        if self.parameterAsBool(parameters, "TTA", context):
            args.append("--tta")
        args += ["--threads", str(self.parameterAsInt(parameters, "THREADS", context))]
        results = {"OUTPUT": output}
        if given(parameters, "PROBABILITY_MAPS"):
            folder = self.parameterAsFileOutput(parameters, "PROBABILITY_MAPS", context)
            args += ["--save-masks", folder]
            results["PROBABILITY_MAPS"] = folder
        return args, results

    def finish(self, results, parameters, context, feedback):
        load_output_styled(context, results["OUTPUT"], "buildings")
        folder = results.get("PROBABILITY_MAPS")
        if folder:
            maps = sorted(glob.glob(os.path.join(glob.escape(folder), "*.probability.tif")))
            load_rasters_styled(context, maps, "PROBABILITY_MAPS")
        return results
