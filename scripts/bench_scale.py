"""Scale-out benchmark: throughput with 1 vs 2 worker processes, and a worker's peak memory vs raster size.

    .venv/bin/python scripts/bench_scale.py                       # defaults below, a few minutes on 2 cores
    .venv/bin/python scripts/bench_scale.py --model bundled --scaling-size 2048 --skip-memory

Everything goes through ``bldgseg.pipeline.run`` with ``workers=N`` (a Dask LocalCluster of N processes, one
thread each, PyTorch threads = cores / N), exactly as ``bldgseg run --workers N``.

* **Scaling**: the same generated raster (``--scaling-size`` square, 8192 by default, 16 chunks of 2048 px)
  processed with 1 and with 2 workers.
  Throughput = source megapixels / ``seconds_processing`` (first task submitted to last part written: model
  loading in the workers included, cluster start-up excluded; the end-to-end time is printed too).
* **Bounded memory**: generated ``--small`` and ``--big`` square rasters (5000 and 20000 by default), one worker
  each, same ``--chunk-size`` (4096, the CLI's default). A worker's peak RSS is its
  ``VmHWM`` (``/proc/self/status``) recorded by every work unit in its part file (the maximum over the run's units
  is reported; ``ru_maxrss`` would be wrong here: it survives ``exec`` and reports the spawning client's peak);
  each run starts fresh workers.

Models (``--model``): ``fast`` (default) is a 1x1-convolution "red roof" segmenter with exactly known output,
registered in the workers by preloading this file. It keeps a full 20000 x 20000 run to minutes on a small
machine while every other stage (windowed reads, blending, vectorizing, attributes, part files, merge) does its
real work. ``bundled`` is the real ``aerial-buildings`` U-Net (about 0.5-1 Mpx/s on 2 CPU cores): use it with a
small ``--scaling-size``; with ``--max-units`` the memory runs stop after that many units of each raster
(``--max-units`` crops the raster with a VRT window to whole chunks, so memory per unit is unchanged).

The generated rasters are green ground with red roofs (20 x 30 px every 100 x 110 px, so ~36,000 buildings in
20000 x 20000 px), written strip by strip as tiled, deflate-compressed GeoTIFFs (0.3 m, UTM 36N).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.nn as nn
from rasterio.transform import from_origin

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bldgseg.models import ModelCard, register_architecture, save_checkpoint  # noqa: E402

GREEN = (40, 140, 50)
RED = (220, 30, 30)


class FastRoofNet(nn.Module):
    """logit = 4 (R - G) on ImageNet-normalised input: red roofs, nothing else (same as the tests' model)."""

    def __init__(
        self, encoder_name: str = "none", encoder_weights=None, in_channels: int = 3, classes: int = 1
    ):
        super().__init__()
        self.head = nn.Conv2d(in_channels, classes, 1)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.weight[0, 0, 0, 0] = 4.0
            self.head.weight[0, 1, 0, 0] = -4.0
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


register_architecture("bench-fast-roofs", FastRoofNet)  # runs in every worker: this file is preloaded


def fast_model(folder: Path) -> Path:
    card = ModelCard(
        name="bench-fast-roofs",
        architecture="bench-fast-roofs",
        encoder="none",
        tile_size=512,
        overlap=32,
        gsd_m=0.3,
        threshold=0.5,
    )
    return save_checkpoint(FastRoofNet(), card, folder / "bench-fast.safetensors")


def make_raster(path: Path, size: int, strip: int = 512) -> Path:
    """A size x size RGB GeoTIFF of red roofs on green, written strip by strip (memory: one strip)."""
    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype="uint8",
        crs="EPSG:32636",
        transform=from_origin(500000.0, 100000.0 + size * 0.3, 0.3, 0.3),
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
        BIGTIFF="IF_SAFER",
    )
    cols = np.arange(size)
    roof_cols = (cols % 110) >= 40
    roof_cols &= (cols % 110) < 70
    rng = np.random.default_rng(0)
    with rasterio.Env(GDAL_CACHEMAX=64 * 2**20), rasterio.open(path, "w", **profile) as ds:
        for row0 in range(0, size, strip):
            rows = np.arange(row0, min(size, row0 + strip))
            roof_rows = ((rows % 100) >= 30) & ((rows % 100) < 50)
            roofs = roof_rows[:, None] & roof_cols[None, :]
            block = np.empty((3, len(rows), size), np.uint8)
            for band in range(3):
                block[band] = np.where(roofs, RED[band], GREEN[band])
            noise = rng.integers(-6, 7, size=block.shape[1:], dtype=np.int16)  # some texture
            block = np.clip(block.astype(np.int16) + noise[None], 0, 255).astype(np.uint8)
            ds.write(block, window=((row0, row0 + len(rows)), (0, size)))
    return path


def crop_vrt(source: Path, rows: int, cols: int, dest: Path) -> Path:
    """A VRT of the top-left ``rows`` x ``cols`` pixels of ``source`` (to run only some units of a raster)."""
    with rasterio.open(source) as ds:
        crs_wkt, gt = ds.crs.to_wkt(), ds.transform.to_gdal()
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="0">{source}</SourceFilename><SourceBand>{b}</SourceBand>'
        f'<SrcRect xOff="0" yOff="0" xSize="{cols}" ySize="{rows}"/>'
        f'<DstRect xOff="0" yOff="0" xSize="{cols}" ySize="{rows}"/></SimpleSource></VRTRasterBand>'
        for b in (1, 2, 3)
    )
    dest.write_text(
        f'<VRTDataset rasterXSize="{cols}" rasterYSize="{rows}"><SRS>{crs_wkt}</SRS>'
        f"<GeoTransform>{', '.join(repr(v) for v in gt)}</GeoTransform>{bands}</VRTDataset>"
    )
    return dest


def client_peak_mb() -> float:
    """This process's peak RSS (VmHWM), MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_once(
    image: Path, out: Path, model: str, workers: int, chunk_size: int, preload: tuple[str, ...]
) -> dict:
    from bldgseg.pipeline import RunConfig, run

    config = RunConfig(
        inputs=[image],
        output=out,
        model=model,
        device="cpu",
        chunk_size=chunk_size,
        workers=workers,
        preload=preload,
        overwrite=True,
    )
    t0 = time.perf_counter()
    result = run(config)
    meta = dict(result.metadata)
    meta["wall_s"] = time.perf_counter() - t0
    with rasterio.open(image) as ds:
        meta["megapixels"] = ds.width * ds.height / 1e6
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=["fast", "bundled"], default="fast")
    parser.add_argument("--scaling-size", type=int, default=8192, help="raster side for 1 vs 2 workers")
    parser.add_argument("--scaling-chunk-size", type=int, default=2048, help="chunk size of the scaling runs")
    parser.add_argument("--small", type=int, default=5000)
    parser.add_argument("--big", type=int, default=20000)
    parser.add_argument("--chunk-size", type=int, default=4096, help="chunk size of the memory runs")
    parser.add_argument("--max-units", type=int, default=None, help="memory runs: only this many units each")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep rasters/outputs here (default: temp)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bldgseg-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    preload = (str(Path(__file__).resolve()),)
    model = str(fast_model(work)) if args.model == "fast" else "aerial-buildings"
    model_text = (
        "fast 1x1-conv red-roof model (exactly known output; inference is cheap, every other stage is real)"
        if args.model == "fast"
        else "bundled aerial-buildings U-Net (EfficientNet-Lite0)"
    )
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "model": model_text,
        "chunk_size_scaling": args.scaling_chunk_size,
        "chunk_size_memory": args.chunk_size,
    }
    print(f"# bldgseg scale benchmark — {results['machine']}")
    print(f"# model: {model_text}")
    print(
        f"# LocalCluster worker processes (--workers); chunks of {args.scaling_chunk_size} px (scaling), "
        f"{args.chunk_size} px (memory)"
    )

    def raster(size: int) -> Path:
        path = work / f"scene_{size}.tif"
        if not path.exists():
            t0 = time.perf_counter()
            make_raster(path, size)
            print(f"generated {path.name}: {size} x {size} px in {time.perf_counter() - t0:.0f} s")
        return path

    try:
        if not args.skip_scaling:
            image = raster(args.scaling_size)
            rows = []
            for workers in (1, 2):
                load_before = os.getloadavg()[0]
                meta = run_once(
                    image, work / f"scaling_{workers}.gpkg", model, workers, args.scaling_chunk_size, preload
                )
                mpx_s = meta["megapixels"] / meta["seconds_processing"]
                rows.append(
                    {
                        "workers": workers,
                        "megapixels": round(meta["megapixels"], 1),
                        "units": meta["units"],
                        "buildings": meta["buildings"],
                        "seconds_processing": meta["seconds_processing"],
                        "seconds_end_to_end": round(meta["wall_s"], 1),
                        "mpx_per_s": round(mpx_s, 2),
                        "peak_worker_rss_mb": meta["peak_worker_rss_mb"],
                        "load_average_before": round(load_before, 2),
                    }
                )
                print(
                    f"scaling  workers={workers} (1-min load average before: {load_before:.2f})"
                    f": {meta['megapixels']:.1f} Mpx, {meta['units']} units, "
                    f"{meta['buildings']} buildings, processing {meta['seconds_processing']:.1f} s "
                    f"-> {mpx_s:.2f} Mpx/s (end to end {meta['wall_s']:.1f} s incl. cluster start and merge)"
                )
            assert rows[0]["buildings"] == rows[1]["buildings"], "1 and 2 workers disagree"
            results["scaling"] = rows
            print(f"scaling  speed-up 1 -> 2 workers: {rows[1]['mpx_per_s'] / rows[0]['mpx_per_s']:.2f}x")

        if not args.skip_memory:
            rows = []
            for size in (args.small, args.big):
                image = raster(size)
                measured = image
                note = "whole raster"
                if args.max_units:
                    per_side = -(-size // args.chunk_size)
                    n_rows = max(1, min(per_side, args.max_units // per_side or 1))
                    n_cols = per_side if args.max_units >= per_side else args.max_units
                    height = min(size, n_rows * args.chunk_size)
                    width = min(size, n_cols * args.chunk_size)
                    measured = crop_vrt(image, height, width, work / f"scene_{size}_crop.vrt")
                    note = f"first {n_rows * n_cols} unit(s): {width} x {height} px window of the raster"
                meta = run_once(measured, work / f"memory_{size}.gpkg", model, 1, args.chunk_size, preload)
                rows.append(
                    {
                        "raster": f"{size} x {size}",
                        "processed": note,
                        "megapixels": round(meta["megapixels"], 1),
                        "units": meta["units"],
                        "buildings": meta["buildings"],
                        "seconds_processing": meta["seconds_processing"],
                        "peak_worker_rss_mb": meta["peak_worker_rss_mb"],
                    }
                )
                print(
                    f"memory   {size} x {size} ({note}): {meta['units']} units, {meta['buildings']} buildings, "
                    f"{meta['seconds_processing']:.0f} s; peak worker RSS {meta['peak_worker_rss_mb']:.0f} MiB"
                )
            results["memory"] = rows
            full = 3 * args.big * args.big / 2**20
            print(
                f"memory   a full {args.big} x {args.big} RGB array alone would be {full:,.0f} MiB; "
                f"client peak RSS (this process, incl. generating rasters and merging) "
                f"{client_peak_mb():.0f} MiB"
            )
    finally:
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
