"""Adapt to region: ``bldgseg adapt`` fine-tunes a model on the user's imagery and footprints."""

from __future__ import annotations

import os

from qgis.core import (
    QgsProcessing,
    QgsProcessingOutputFile,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..layers import raster_files, vector_file
from .base import BldgsegAlgorithm, advanced
from .extract import DEVICES


class AdaptToRegion(BldgsegAlgorithm):
    command = "adapt"
    algorithm_name = "adapt_to_region"
    title = "Adapt to region"
    help_text = (
        "Fine-tunes a model to your region from building footprints on your imagery (an OpenStreetMap extract, "
        "or a bldgseg result you corrected), within a time budget, and scores it before and after on held-out "
        "tiles. Use the checkpoint it writes as the model of <i>Extract buildings</i>."
    )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS's name)
        self.addParameter(
            QgsProcessingParameterMultipleLayers("IMAGES", "Imagery of your region", QgsProcessing.TypeRaster)
        )
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                "FOOTPRINTS", "Building footprints on those images", [QgsProcessing.TypeVectorPolygon]
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                "MODEL", "Model to adapt (bundled name or .safetensors path)", defaultValue="aerial-buildings"
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                "MINUTES", "Training time budget (minutes)", QgsProcessingParameterNumber.Double, 10.0, minValue=0.05
            )
        )
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", options=DEVICES, defaultValue=0))
        self.addParameter(
            advanced(
                QgsProcessingParameterNumber(
                    "VAL_FRACTION",
                    "Share of tiles held out for scoring",
                    QgsProcessingParameterNumber.Double,
                    0.2,
                    minValue=0.05,
                    maxValue=0.5,
                )
            )
        )
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Output folder"))
        self.addOutput(QgsProcessingOutputFile("CHECKPOINT", "Adapted model (best.safetensors)"))

    def arguments(self, parameters, context, feedback):
        footprints, layer = vector_file(self, parameters, "FOOTPRINTS", context, feedback)
        folder = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        args = [*raster_files(self, parameters, "IMAGES", context), "--footprints", footprints]
        if layer:
            args += ["--footprints-layer", layer]
        args += ["--out", folder, "--overwrite"]
        args += ["--model", self.parameterAsString(parameters, "MODEL", context) or "aerial-buildings"]
        args += ["--minutes", repr(self.parameterAsDouble(parameters, "MINUTES", context))]
        args += ["--device", DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)]]
        args += ["--val-fraction", repr(self.parameterAsDouble(parameters, "VAL_FRACTION", context))]
        return args, {"OUTPUT": folder, "CHECKPOINT": os.path.join(folder, "best.safetensors")}
