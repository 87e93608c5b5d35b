"""STAC Items as inputs: the RGB image asset(s) an Item (or an ItemCollection) points to, its id and date.

Read with ``pystac`` (local file or http(s) URL). The asset read is, in order: every asset keyed or with role
``visual``; else every image asset whose bands (``eo:bands`` or STAC 1.1 ``bands``) are red, green and blue; else
the one GeoTIFF/JPEG 2000 asset without band metadata, when there is exactly one (thumbnails and overviews left
out).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from bldgseg.errors import InputError, one_line

__all__ = ["StacImage", "is_stac_href", "read_stac_images"]

#: Suffixes of a file read as a STAC Item (or ItemCollection).
STAC_SUFFIXES = (".json", ".geojson")
#: Media types of raster assets (prefixes: ``image/tiff; application=geotiff; profile=cloud-optimized`` too).
RASTER_MEDIA_TYPES = ("image/tiff", "image/jp2", "image/vnd.stac.geotiff", "application/x-geotiff")
RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt")
SKIPPED_ROLES = {"thumbnail", "overview", "metadata"}


@dataclass(frozen=True)
class StacImage:
    """An image asset of an Item: its absolute ``href``, the Item's id and acquisition date (ISO 8601, UTC,
    ``start/end`` for an Item with a date range only; None when the Item has neither)."""

    href: str
    item_id: str
    image_date: str | None


def is_stac_href(name: str) -> bool:
    """Whether an input names a STAC Item file (``.json`` / ``.geojson``, query and fragment ignored)."""
    base = name.split("?", 1)[0].split("#", 1)[0].lower()
    return base.endswith(STAC_SUFFIXES)


def read_stac_images(href: str) -> list[StacImage]:
    """The image assets of the STAC Item (or each Item of the ItemCollection) at ``href``.

    Raises :class:`InputError` (one line naming ``href``) when it cannot be read, is not an Item, or an Item
    has no asset that fits (the message lists its asset keys).
    """
    import pystac

    try:
        data = pystac.StacIO.default().read_json(href)
    except Exception as exc:  # urllib, OSError, JSON errors: all mean "cannot be read"
        raise InputError(
            f"{href}: the STAC item cannot be read ({one_line(exc)}); check the path or URL"
        ) from exc
    kind = data.get("type") if isinstance(data, dict) else None
    try:
        if kind == "Feature":
            items = [pystac.Item.from_dict(data, href=href, preserve_dict=False)]
        elif kind == "FeatureCollection":
            items = list(pystac.ItemCollection.from_dict(data, preserve_dict=False))
        else:
            raise InputError(
                f"{href}: is not a STAC Item (type {kind!r}); pass an Item or an ItemCollection, "
                "not a Catalog or Collection"
            )
    except (pystac.STACError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{href}: is not a valid STAC Item ({one_line(exc)}); check the file") from exc
    return [image for item in items for image in _item_images(item, href)]


def _item_images(item: Any, href: str) -> list[StacImage]:
    date = item_date(item)
    assets = choose_assets(item.assets)
    if not assets:
        keys = ", ".join(item.assets) or "none"
        raise InputError(
            f"{href}: STAC item {item.id} has no visual or RGB image asset (assets: {keys}); "
            "pass the image asset's URL as the input instead"
        )
    from pystac.utils import make_absolute_href

    # relative hrefs: against the Item's self link, else the file read (an ItemCollection's Items have no link)
    return [
        StacImage(asset.get_absolute_href() or make_absolute_href(asset.href, href), item.id, date)
        for asset in assets
    ]


def choose_assets(assets: dict[str, Any]) -> list[Any]:
    """The assets read as RGB images (see the module's docstring), in the Item's order."""
    visual = [a for key, a in assets.items() if key == "visual" or "visual" in (a.roles or [])]
    if visual:
        return visual
    rasters = [a for a in assets.values() if _is_raster(a) and not SKIPPED_ROLES & set(a.roles or [])]
    rgb = [a for a in rasters if _band_names(a) == ["red", "green", "blue"]]
    if rgb:
        return rgb
    undescribed = [a for a in rasters if _band_names(a) is None]
    return undescribed if len(undescribed) == 1 else []


def _is_raster(asset: Any) -> bool:
    media = (asset.media_type or "").lower()
    if media:
        return media.startswith(RASTER_MEDIA_TYPES)
    return asset.href.split("?", 1)[0].lower().endswith(RASTER_SUFFIXES)


def _band_names(asset: Any) -> list[str] | None:
    """The common names of the asset's bands (``eo:bands`` or ``bands``), None without band metadata."""
    bands = asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands")
    if not isinstance(bands, list):
        return None
    return [_common_name(b) for b in bands]


def _common_name(band: Any) -> str:
    if not isinstance(band, dict):
        return ""
    return str(band.get("common_name") or band.get("eo:common_name") or band.get("name") or "").lower()


def item_date(item: Any) -> str | None:
    """The Item's ``datetime`` as ISO 8601 UTC, else ``start_datetime/end_datetime``, else None."""
    if item.datetime is not None:
        return _iso(item.datetime)
    props = item.properties
    dates = [props.get(k) for k in ("start_datetime", "end_datetime")]
    return "/".join(_iso_text(d) for d in dates) if all(dates) else None


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_text(text: str) -> str:
    try:
        return _iso(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        return text

