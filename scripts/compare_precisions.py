"""Accuracy of each precision and engine against fp32 on the validation tiles (docs/accuracy.md).

Each available engine/precision runs the full `bldgseg run` pipeline on the 5 southern Zanzibar z19 tiles (the
held-out validation tiles of `scripts/train_aerial.py`), is scored against the OpenStreetMap footprints (pixel
IoU, polygon F1 at IoU >= 0.5), and is compared with the torch fp32 run itself (pixel IoU and polygon F1 of its
buildings against fp32's).

    .venv/bin/python scripts/compare_precisions.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from tune_instances import validation_tiles  # scripts/ is on sys.path when run as a script

from bldgseg.errors import BldgsegError
from bldgseg.evaluation import evaluate
from bldgseg.pipeline import RunConfig, run
from bldgseg.precision import openvino_available, read_cpu_flags

SETTINGS = [("torch", "fp32"), ("torch", "bf16"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--model", default="aerial-buildings")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument(
        "--skip", nargs="*", default=[], metavar="ENGINE-PRECISION", help="e.g. torch-bf16 (slow where emulated)"
    )
    args = parser.parse_args()
    images, labels = validation_tiles(args.data / "aerial")
    settings = [
        s for s in SETTINGS if (s[0] == "torch" or openvino_available()) and f"{s[0]}-{s[1]}" not in args.skip
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        outputs = {}
        for engine, precision in settings:
            out = Path(tmp) / f"{engine}-{precision}.gpkg"
            start = time.perf_counter()
            try:
                result = run(
                    RunConfig(inputs=images, output=out, model=args.model, device="cpu", engine=engine,
                              precision=precision)
                )
            except BldgsegError as exc:
                print(f"{engine} {precision}: skipped ({exc})", flush=True)
                continue
            outputs[(engine, precision)] = out
            truth = evaluate(out, labels, images=images).overall
            reference = outputs[("torch", "fp32")]
            versus = evaluate(out, reference, images=images).overall
            row = {
                "engine": engine,
                "precision": precision,
                "ran_as": f"{result.metadata['engine']} {result.metadata['precision']}",
                "pixel_iou": truth["pixel"]["iou"],
                "polygon_f1": truth["polygon"]["f1"],
                "buildings": truth["polygon"]["n_pred"],
                "pixel_iou_vs_fp32": versus["pixel"]["iou"],
                "polygon_f1_vs_fp32": versus["polygon"]["f1"],
                "seconds": round(time.perf_counter() - start, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    flags = sorted(f for f in read_cpu_flags() if f.startswith(("avx2", "avx512", "amx", "avx_vnni")))
    print(f"\n{len(images)} validation tiles (southern Zanzibar, z19), model {args.model}; CPU flags {flags}\n")
    print("| engine | precision | pixel IoU | polygon F1 | buildings | pixel IoU vs fp32 | polygon F1 vs fp32 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ran = r["ran_as"].split()[1]
        precision = r["precision"] if ran == r["precision"] else f"{r['precision']} (ran {ran})"
        print(
            f"| {r['engine']} | {precision} | {r['pixel_iou']:.4f} | {r['polygon_f1']:.4f} | "
            f"{r['buildings']} | {r['pixel_iou_vs_fp32']:.4f} | {r['polygon_f1_vs_fp32']:.4f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
