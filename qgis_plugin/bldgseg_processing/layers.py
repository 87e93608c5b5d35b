"""QGIS layers in and out: file paths of input layers, and outputs loaded with the style bldgseg stored."""

from __future__ import annotations

from qgis.core import (
    QgsMapLayer,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProject,
    QgsProviderRegistry,
)

#: Vector formats bldgseg reads as they are; other sources (memory layers, services, a selection or a
#: filter to honour) are written to a temporary GeoPackage by Processing first.
VECTOR_FORMATS = ["gpkg", "shp", "geojson", "json", "fgb", "gml", "kml", "sqlite", "parquet"]


def raster_file(layer: QgsMapLayer) -> str:
    """The file (or GDAL path, e.g. ``/vsicurl/…``) a raster layer reads; refused for non-GDAL layers."""
    if layer.providerType() != "gdal":
        raise QgsProcessingException(
            f"{layer.name()}: a {layer.providerType()} layer, not a raster file; bldgseg reads GDAL rasters "
            "(GeoTIFF, VRT…): save it as a GeoTIFF first"
        )
    parts = QgsProviderRegistry.instance().decodeUri("gdal", layer.source())
    if parts.get("layerName"):  # a subdataset (GPKG:/x.gpkg:table, NETCDF:…): GDAL opens the source string
        return layer.source()
    return parts.get("path") or layer.source()


def raster_files(algorithm, parameters: dict, name: str, context: QgsProcessingContext) -> list[str]:
    """Files of the raster layers (or files) given for the multiple-layer parameter ``name``."""
    return [raster_file(layer) for layer in algorithm.parameterAsLayerList(parameters, name, context)]


def optional_raster_file(algorithm, parameters: dict, name: str, context: QgsProcessingContext) -> str | None:
    """File of an optional raster-layer parameter, ``None`` when not given."""
    if parameters.get(name) in (None, ""):
        return None
    layer = algorithm.parameterAsRasterLayer(parameters, name, context)
    return raster_file(layer) if layer is not None else None


def vector_file(algorithm, parameters: dict, name: str, context: QgsProcessingContext, feedback) -> tuple[str, str]:
    """``(path, layer name)`` of a feature-source parameter as a file bldgseg can read (layer name may be '')."""
    path, layer_name = algorithm.parameterAsCompatibleSourceLayerPathAndLayerName(
        parameters, name, context, VECTOR_FORMATS, "gpkg", feedback
    )
    if not path:
        raise QgsProcessingException(f"{name}: no layer or file given")
    return path, layer_name or ""


class DefaultStyleLoader(QgsProcessingLayerPostProcessorInterface):
    """Applies a loaded output's own default style: the GeoPackage's ``layer_styles`` row, or the ``.qml``
    next to a file (Processing loads outputs without it)."""

    #: Processing does not own post-processors: they must live until QGIS has called them.
    alive: list[DefaultStyleLoader] = []

    @classmethod
    def create(cls) -> DefaultStyleLoader:
        loader = cls()
        cls.alive.append(loader)
        return loader

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802 (QGIS's name)
        message, loaded = layer.loadDefaultStyle()
        if loaded:
            layer.triggerRepaint()
        elif feedback is not None:
            feedback.pushInfo(f"{layer.name()}: no stored style applied ({message})")


def load_output_styled(context: QgsProcessingContext, path: str, layer_name: str = "") -> None:
    """When Processing is to load the output ``path``, load its ``layer_name`` and apply its stored style."""
    if not context.willLoadLayerOnCompletion(path):
        return
    old = context.layerToLoadOnCompletionDetails(path)
    details = QgsProcessingContext.LayerDetails(old.name, old.project, old.outputName)
    if hasattr(old, "layerTypeHint"):
        details.layerTypeHint = old.layerTypeHint
    details.setPostProcessor(DefaultStyleLoader.create())
    layers = context.layersToLoadOnCompletion()
    layers.pop(path, None)
    uri = f"{path}|layername={layer_name}" if layer_name and path.lower().endswith(".gpkg") else path
    layers[uri] = details
    context.setLayersToLoadOnCompletion(layers)


def load_rasters_styled(context: QgsProcessingContext, paths: list[str], output_name: str) -> None:
    """Load these raster files when the algorithm finishes, each with its ``.qml`` style."""
    project = context.project() or QgsProject.instance()
    for path in paths:
        name = path.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
        details = QgsProcessingContext.LayerDetails(name, project, output_name)
        details.setPostProcessor(DefaultStyleLoader.create())
        context.addLayerToLoadOnCompletion(path, details)
