"""The "bldgseg" Processing provider: its algorithms, output formats and setting."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider

from .algorithms import ALGORITHMS
from .settings import register_settings, unregister_settings


class BldgsegProvider(QgsProcessingProvider):
    """bldgseg in the Processing Toolbox; every algorithm runs the configured bldgseg executable."""

    def load(self) -> bool:
        register_settings()
        self.refreshAlgorithms()
        return True

    def unload(self) -> None:
        unregister_settings()

    def loadAlgorithms(self) -> None:  # noqa: N802 (QGIS's name)
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())

    def id(self) -> str:
        return "bldgseg"

    def name(self) -> str:
        return "bldgseg"

    def longName(self) -> str:  # noqa: N802 (QGIS's name)
        return "bldgseg: building footprints from aerial imagery"

    def supportedOutputVectorLayerExtensions(self) -> list[str]:  # noqa: N802 (QGIS's name)
        return ["gpkg", "fgb", "parquet"]

    def defaultVectorFileExtension(self, hasGeometry: bool = True) -> str:  # noqa: N802,N803 (QGIS's names)
        return "gpkg"
