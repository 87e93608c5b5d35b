"""Benchmark: model-only vs end-to-end `bldgseg run` throughput and peak memory on a generated large raster.

    .venv/bin/python scripts/bench_pipeline.py --size 8192 --device auto --batch-size 8

The raster is built by tiling the bundled 0.3 m sample tiles (Kampala, Zanzibar) onto a UTM grid at 0.3 m, so no
resampling happens and every window holds real imagery.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

from bldgseg.inference import Predictor, resolve_device
from bldgseg.models import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def build_raster(path: Path, size: int) -> None:
    """A size x size RGB GeoTIFF tiled from the real 256-px sample tiles, written block by block."""
    tiles = []
    for tif in sorted((REPO / "sample_data" / "images").glob("*OAM-*-19.tif")):
        with rasterio.open(tif) as ds:
            tiles.append(ds.read([1, 2, 3]))
    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype="uint8",
        crs="EPSG:32736",
        transform=from_origin(500000, 9300000, 0.3, 0.3),
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
        BIGTIFF="IF_SAFER",
    )
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as ds:
        for row in range(0, size, 256):
            strip = np.concatenate([tiles[rng.integers(len(tiles))] for _ in range(0, size, 256)], axis=2)
            ds.write(
                strip[:, : min(256, size - row), :size], window=((row, row + min(256, size - row)), (0, size))
            )


def model_only(model_name: str, device: str, batch_size: int, tiles: int, tile: int) -> float:
    """Megapixels/s of the bare forward pass (Predictor batches, same normalisation), excluding I/O."""
    model, card = load_checkpoint(model_name)
    predictor = Predictor(model, card, resolve_device(device), batch_size=batch_size, tile_size=tile)
    if card.head == "instance":
        from bldgseg.models.panoptic import instance_maps

        def batch(stack: np.ndarray) -> np.ndarray:
            return predictor._tta_probabilities(stack, instance_maps)
    else:
        batch = predictor._predict_batch
    stack = np.random.default_rng(0).integers(0, 255, (batch_size, 3, tile, tile), dtype=np.uint8)
    batch(stack)  # warm-up
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(max(1, tiles // batch_size)):
        batch(stack)
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return max(1, tiles // batch_size) * batch_size * tile * tile / 1e6 / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument(
        "--model", default="aerial-buildings", help="model name or checkpoint (instance models too)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model-tiles", type=int, default=64, help="tiles timed for the model-only figure")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raster = Path(tmp) / "large.tif"
        t0 = time.perf_counter()
        build_raster(raster, args.size)
        print(f"built {args.size}x{args.size} raster in {time.perf_counter() - t0:.1f} s", flush=True)
        model_mpx = model_only(args.model, args.device, args.batch_size, args.model_tiles, 512)
        print(f"model-only: {model_mpx:.2f} Mpx/s", flush=True)
        cmd = [
            sys.executable,
            "-m",
            "bldgseg",
            "run",
            str(raster),
            "-o",
            str(Path(tmp) / "out.gpkg"),
            "--device",
            args.device,
            "--batch-size",
            str(args.batch_size),
            "--threads",
            str(args.threads),
            "--model",
            args.model,
        ]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        import pyogrio

        buildings = pyogrio.read_info(Path(tmp) / "out.gpkg", layer="buildings")["features"]
    e2e_mpx = args.size * args.size / 1e6 / seconds
    result = {
        "raster": f"{args.size}x{args.size} RGB uint8, 0.3 m",
        "model": args.model,
        "device": str(resolve_device(args.device)),
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "model_only_mpx_s": round(model_mpx, 3),
        "end_to_end_mpx_s": round(e2e_mpx, 3),
        "end_to_end_over_model_only": round(e2e_mpx / model_mpx, 3),
        "end_to_end_seconds": round(seconds, 1),
        "peak_rss_mb_bldgseg_run": round(peak_mb),
        "buildings": buildings,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
