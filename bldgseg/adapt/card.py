"""The adapted checkpoint: the trainer's best weights with a card that says where, from what and how well."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bldgseg.files import atomic_replace

__all__ = ["CARD_KEYS", "adapted_card", "publish_checkpoint", "write_json"]

#: Card fields the trained checkpoint decides; every other field (threshold, tiling, post-processing
#: settings...) is the base model's, so ``bldgseg run`` treats the adapted model as it treats its base.
CARD_KEYS = ("name", "architecture", "encoder", "classes", "head", "gsd_m", "tile_size", "overlap")


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON, atomically (a hidden temporary file renamed onto ``path``)."""
    text = json.dumps(data, indent=2, default=str, allow_nan=False) + "\n"
    return atomic_replace(path, lambda tmp: tmp.write_text(text), ".json", sync=False)


def adapted_card(base: dict[str, Any], trained: dict[str, Any], adaptation: dict[str, Any]) -> dict[str, Any]:
    """The adapted model's card from the base card, the trainer's card of the best epoch and ``adaptation``.

    ``adaptation`` (see :func:`bldgseg.adapt.job.adapt`) holds the user's data, the region, the base model
    and its metrics, budget, steps, device and, once measured, the before/after scores.
    """
    card = dict(base)
    card.pop("int8", None)  # the base's int8 IR belongs to the base's weights, not to these
    card.update({key: trained[key] for key in CARD_KEYS if key in trained})
    data = adaptation["data"]
    user = {
        "name": f"user imagery of the region ({len(data['images'])} image(s)) with footprints "
        f"{Path(data['footprints']).name}",
        "images": data["images"],
        "footprints": data["footprints"],
        "footprints_layer": data["footprints_layer"],
        "license": "the user's own data (its licence applies to this model too)",
    }
    inherited = [
        {**entry, "name": f"{entry.get('name', '?')} (via the base model {base['name']})"}
        for entry in base.get("training_data", [])
    ]
    card["training_data"] = [user, *inherited]
    card["license"] = (
        f"{base.get('license', '')}; adapted on the user's data, whose licence applies too".lstrip("; ")
    )
    card["metrics"] = {
        "validation_pixel": trained.get("metrics", {}).get("validation_pixel", {}),
        "adapt_validation": adaptation.get("comparison", {}),
    }
    card["training"] = {**trained.get("training", {}), "adaptation": adaptation}
    bbox = ", ".join(f"{v:.5f}" for v in adaptation["region_bbox_lonlat"])
    card["notes"] = (
        f"{base['name']} adapted by `bldgseg adapt` to the region lon/lat ({bbox}) in "
        f"{adaptation['minutes_trained']:.1f} minutes ({adaptation['steps']} steps on {adaptation['device']}); "
        "before/after scores on the held-out validation part in metrics.adapt_validation."
    )
    return card


def publish_checkpoint(
    train_dir: Path, out_dir: Path, base: dict[str, Any], adaptation: dict[str, Any]
) -> Path:
    """``train_dir``'s best weights as ``out_dir/best.safetensors`` with the adapted card beside it."""
    trained = json.loads((train_dir / "best.json").read_text())
    weights = out_dir / "best.safetensors"
    atomic_replace(weights, lambda tmp: shutil.copyfile(train_dir / "best.safetensors", tmp), ".safetensors")
    write_json(weights.with_suffix(".json"), adapted_card(base, trained, adaptation))
    return weights
