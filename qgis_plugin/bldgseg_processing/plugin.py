"""The plugin object: registers the bldgseg Processing provider when QGIS starts and removes it on unload."""

from __future__ import annotations

from qgis.core import QgsApplication

from .provider import BldgsegProvider


class BldgsegPlugin:
    """Processing-only plugin: no menus or toolbars, the algorithms live in the Processing Toolbox."""

    def __init__(self, iface=None):
        self.iface = iface
        self.provider: BldgsegProvider | None = None

    def initProcessing(self) -> None:  # noqa: N802 (QGIS's name)
        """Add the provider to the Processing registry (also called without a GUI, e.g. qgis_process)."""
        if self.provider is None:
            self.provider = BldgsegProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 (QGIS's name)
        self.initProcessing()

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
