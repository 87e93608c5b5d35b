"""QGIS plugin entry point: ``classFactory`` gives QGIS the plugin that adds the bldgseg Processing provider."""


def classFactory(iface):  # noqa: N802 (the name QGIS calls)
    """The plugin object QGIS loads (``iface`` is QGIS's interface; unused by a Processing-only plugin)."""
    from .plugin import BldgsegPlugin

    return BldgsegPlugin(iface)
