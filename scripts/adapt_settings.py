"""Measure `bldgseg adapt` settings: adapt with each, then score zero-shot vs adapted on separate test tiles.

Used to choose the adapt defaults (lr, batch, augmentation) on a city the model never saw that is NOT a test
city (docs/accuracy.md, "Adapting to a region"), and to measure the leave-one-city-out result with the
defaults. Test scores come from the real pipeline (`bldgseg.pipeline.run`, then `bldgseg.evaluation.evaluate`
against the footprints on the test tiles).

    .venv/bin/python scripts/adapt_settings.py --model runs/aerial-reverse/best.safetensors \\
        --footprints ../shared/data/aerial/oam_zanzibar_tz/labels/buildings.geojson \\
        --adapt Z/OAM-{319292..319295}-{270960..270961}-19.tif --test Z/OAM-319299-270996-19.tif … \\
        --minutes 5 --settings lr3e-4 lr1e-3 lr1e-4 light --out runs/adapt-sweep
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bldgseg.adapt import AdaptConfig, adapt
from bldgseg.adapt.scoring import score_model

#: Named settings (AdaptConfig fields) compared by the sweep; "default" is AdaptConfig's own.
LIGHT_AUGMENTATION = {
    "affine_p": 0.0,
    "brightness_contrast_p": 0.5,
    "hsv_p": 0.3,
    "noise_p": 0.0,
    "illumination_p": 0.0,
    "shadow_p": 0.0,
}
SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "lr1e-4": {"lr": 1e-4, "augmentation": {}},
    "lr3e-4": {"lr": 3e-4, "augmentation": {}},
    "lr1e-3": {"lr": 1e-3, "augmentation": {}},
    "light": {"lr": 3e-4, "augmentation": LIGHT_AUGMENTATION},
    "light-lr1e-3": {"lr": 1e-3, "augmentation": LIGHT_AUGMENTATION},
    "lr3e-3": {"lr": 3e-3, "augmentation": {}},
    "batch4": {"lr": 3e-4, "batch_size": 4, "augmentation": {}},
    "batch4-lr1e-3": {"lr": 1e-3, "batch_size": 4, "augmentation": {}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="aerial-buildings")
    parser.add_argument("--footprints", type=Path, required=True)
    parser.add_argument("--adapt", type=Path, nargs="+", required=True, help="tiles to adapt on")
    parser.add_argument("--test", type=Path, nargs="+", required=True, help="tiles to test on")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument(
        "--steps", type=int, help="a fixed number of steps (multiple of 25) instead of the time budget"
    )
    parser.add_argument("--settings", nargs="+", default=["default"], choices=sorted(SETTINGS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0, help="adapt's seed (its validation split and training)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [test_row("zero-shot", args.model, args, {})]
    for name in args.settings:
        start = time.monotonic()
        result = adapt(
            AdaptConfig(
                images=args.adapt,
                footprints=args.footprints,
                out_dir=args.out / name,
                model=args.model,
                minutes=float("inf") if args.steps else args.minutes,
                epochs=max(1, args.steps // 25) if args.steps else AdaptConfig.epochs,
                device=args.device,
                seed=args.seed,
                overwrite=True,
                **SETTINGS[name],
            ),
            on_epoch=lambda row: print(json.dumps(row), flush=True),
        )
        adaptation = result.report["adaptation"]
        extra = {
            "steps": adaptation["steps"],
            "minutes_trained": adaptation["minutes_trained"],
            "wall_minutes": round((time.monotonic() - start) / 60, 1),
            "validation": adaptation["comparison"],
        }
        rows.append(test_row(name, result.checkpoint, args, extra))
    (args.out / "sweep.json").write_text(json.dumps(rows, indent=2, default=str))
    print_table(rows)


def test_row(name: str, model: str | Path, args: argparse.Namespace, extra: dict[str, Any]) -> dict[str, Any]:
    """Zero-shot or adapted scores on the test tiles through the pipeline."""
    scores = score_model(model, args.test, args.footprints, None, args.out / f"test_{name}.gpkg", args.device)
    row = {"setting": name, **{f"test_{k}": v for k, v in scores.items()}, **extra}
    print(json.dumps(row, default=str), flush=True)
    return row


def _f(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def print_table(rows: list[dict[str, Any]]) -> None:
    """The sweep as a Markdown table."""
    print(
        "| setting | steps | val pixel IoU before → after | val polygon F1 before → after | "
        "test pixel IoU | test polygon F1 | test P / R | test pred / truth |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        val = row.get("validation")
        iou = f"{_f(val['base']['pixel_iou'])} → {_f(val['adapted']['pixel_iou'])}" if val else "—"
        f1 = f"{_f(val['base']['polygon_f1'])} → {_f(val['adapted']['polygon_f1'])}" if val else "—"
        print(
            f"| {row['setting']} | {row.get('steps', '—')} | {iou} | {f1} | {_f(row['test_pixel_iou'])} | "
            f"{_f(row['test_polygon_f1'])} | {_f(row['test_polygon_precision'])} / "
            f"{_f(row['test_polygon_recall'])} | {row['test_n_pred']} / {row['test_n_truth']} |"
        )


if __name__ == "__main__":
    main()
