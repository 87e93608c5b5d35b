"""Benchmark: `bldgseg run` against a naive loop and torchgeo on the same raster and weights, in one invocation.

    .venv/bin/python scripts/bench_pipeline.py --size 4096

The raster is built by tiling the bundled 0.3 m sample tiles (Kampala, Zanzibar) onto a UTM grid at 0.3 m, so no
resampling happens and every window holds real imagery. The peers are `../shared/bench/peers.py` (naive: one
512-px tile at a time, no overlap; torchgeo: RasterDataset + GridGeoSampler + DataLoader), each run as its own
process with the bundled weights; torchgeo is a benchmark-only dependency found through `--torchgeo-path`
(default `../tg-site`; install line in docs/benchmarks.md). Prints, for each pipeline, whole-process seconds
(start-up and model loading included), Mpx/s, peak RSS, and bldgseg's ratio to each peer; bldgseg's model-alone
throughput with the same precision and engine, start-up times (`--help`, `info`), the CPU model and flags; with
CUDA, the GPU busy share during the run and km²/h at 0.3 m.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO.parent / "shared" / "bench" / "peers.py"
TORCHGEO_PATH = REPO.parent / "tg-site"
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")
GSD_M = 0.3


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
        transform=from_origin(500000, 9300000, GSD_M, GSD_M),
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


def timed_process(cmd: list[str], env: dict[str, str] | None = None, gpu: bool = False) -> dict:
    """Run ``cmd``; its wall seconds, peak RSS (MiB, of this child alone: ``wait4``), stdout, GPU busy share."""
    sampler = GpuSampler() if gpu else None
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)
        if sampler:
            sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{stderr[-3000:]}")
    result = {"seconds": seconds, "stdout": stdout, "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}
    if sampler:
        result["gpu_busy_share"] = sampler.stop()
    return result


class GpuSampler(threading.Thread):
    """Samples ``nvidia-smi`` GPU utilization every 0.2 s; ``stop()`` returns the mean busy share (0-1)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.running = True

    def run(self) -> None:
        while self.running:
            try:
                text = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout
                self.samples.append(float(text.split()[0]) / 100)
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                pass
            time.sleep(0.2)

    def stop(self) -> float | None:
        self.running = False
        self.join(timeout=10)
        return round(float(np.mean(self.samples)), 3) if self.samples else None


def model_alone(model_name: str, device: str, precision: str, engine: str, batch_size: int, tiles: int) -> dict:
    """Mpx/s of the bare forward pass (Predictor batches of 512-px tiles, same normalisation, precision and
    engine as the run), excluding I/O, blending and everything after the model."""
    from bldgseg.engines import file_digest
    from bldgseg.inference import Predictor
    from bldgseg.models import int8_ir_of, load_card, load_checkpoint

    model, card = load_checkpoint(model_name)
    weights, _ = load_card(model_name)
    predictor = Predictor(
        model,
        card,
        device,
        batch_size=batch_size,
        precision=precision,
        engine=engine,
        int8_ir=int8_ir_of(weights, card, file_digest(weights)),
    )
    batch = predictor.predict_batch  # returns NumPy arrays: on CUDA, every batch waits for the GPU
    tile = predictor.tile_size
    stack = np.random.default_rng(0).integers(0, 255, (batch_size, 3, tile, tile), dtype=np.uint8)
    batch(stack)  # warm-up
    start = time.perf_counter()
    rounds = max(1, tiles // batch_size)
    for _ in range(rounds):
        batch(stack)
    mpx_s = rounds * batch_size * tile * tile / 1e6 / (time.perf_counter() - start)
    return {"mpx_s": round(mpx_s, 3), "device": str(predictor.device), "inference": predictor.inference.describe()}


def run_bldgseg(raster: Path, out: Path, args: argparse.Namespace, gpu: bool) -> dict:
    """``bldgseg run`` as a user runs it (a new process, defaults but for the given flags)."""
    cmd = [sys.executable, "-m", "bldgseg", "run", str(raster), "-o", str(out), "--model", args.model]
    cmd += ["--device", args.device, "--precision", args.precision, "--engine", args.engine]
    cmd += ["--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    if args.chunk_size:
        cmd += ["--chunk-size", str(args.chunk_size)]
    result = timed_process(cmd, gpu=gpu)
    import pyogrio

    runs = pyogrio.read_dataframe(out, layer="runs").iloc[0]
    result.update(
        inference=f"{runs.get('engine', '?')} {runs.get('precision', '?')} ({runs.get('inference_reason', '')})",
        seconds_processing=float(runs["seconds_processing"]),
    )
    result["buildings"] = pyogrio.read_info(out, layer="buildings")["features"]
    return result


def run_peer(name: str, raster: Path, weights: Path, args: argparse.Namespace) -> dict:
    """One peer of ``peers.py`` in its own process (torchgeo with ``--torchgeo-path`` on PYTHONPATH)."""
    env = dict(os.environ)
    if name == "torchgeo":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(args.torchgeo_path), env.get("PYTHONPATH", "")]))
    cmd = [sys.executable, str(args.peers_script), name, str(raster), "--ckpt", str(weights)]
    cmd += ["--batch", str(args.batch_size)]
    result = timed_process(cmd, env=env)
    line = next((ln for ln in result["stdout"].splitlines() if ln.startswith("peer=")), "")
    fields = dict(item.split("=", 1) for item in line.split())
    result["seconds_loop"] = float(fields.get("seconds", "nan"))
    result["polygons"] = int(fields.get("polygons", 0))
    return result


def cpu_description() -> dict:
    """CPU model, the flags that matter for inference, cores, load average."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "flags": [f for f in CPU_FLAGS if f in flags],
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def startup_seconds(raster: Path) -> dict:
    """Wall seconds of ``bldgseg --help`` and ``bldgseg info RASTER`` (new processes)."""
    help_s = timed_process([sys.executable, "-m", "bldgseg", "--help"])["seconds"]
    info_s = timed_process([sys.executable, "-m", "bldgseg", "info", str(raster)])["seconds"]
    return {"help_s": round(help_s, 2), "info_s": round(info_s, 2)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--model", default="aerial-buildings", help="model name or checkpoint")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model-tiles", type=int, default=32, help="tiles timed for the model-alone figure")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="bldgseg's --chunk-size (default: the CLI's)"
    )
    parser.add_argument("--peers", default="naive,torchgeo", help="comma-separated, or 'none'")
    parser.add_argument(
        "--engines-table", action="store_true", help="also time the model alone for every engine/precision here"
    )
    parser.add_argument("--peers-script", type=Path, default=PEERS)
    parser.add_argument("--torchgeo-path", type=Path, default=TORCHGEO_PATH)
    args = parser.parse_args()
    args.peers = [] if args.peers == "none" else [p for p in args.peers.split(",") if p]
    if args.peers and not args.peers_script.exists():
        raise SystemExit(
            f"{args.peers_script}: the peers' reference code is missing (it lives in the steering "
            "repository's shared/bench/); pass --peers-script PATH, or --peers none"
        )
    if "torchgeo" in args.peers and not (args.torchgeo_path / "torchgeo").exists():
        raise SystemExit(
            f"{args.torchgeo_path}: no torchgeo there; install it as docs/benchmarks.md says "
            "(pip install --target ...), pass --torchgeo-path, or leave it out with --peers naive"
        )
    return args


def main() -> None:
    args = parse_args()
    from bldgseg.models import resolve_checkpoint

    weights = resolve_checkpoint(args.model)
    gpu = args.device.startswith("cuda") or (args.device == "auto" and _has_cuda())
    megapixels = args.size * args.size / 1e6
    report: dict = {"raster": f"{args.size}x{args.size} RGB uint8, {GSD_M} m", "model": args.model}
    report.update(cpu_description())
    import bldgseg

    # bytecode of bldgseg's modules, as a pip install leaves it (an editable install under PYTHONDONTWRITEBYTECODE,
    # like this project's machines, would compile ~100 modules from source in every process: ~0.15 s each)
    compileall.compile_dir(Path(bldgseg.__file__).parent, quiet=1)
    with tempfile.TemporaryDirectory() as tmp:
        raster = Path(tmp) / "large.tif"
        build_raster(raster, args.size)
        os.sync()  # the raster's pages written back now, not while the first pipeline is timed
        report["startup"] = startup_seconds(raster)
        run = run_bldgseg(raster, Path(tmp) / "out.gpkg", args, gpu)
        peers = {name: run_peer(name, raster, weights, args) for name in args.peers}
    report["model_alone"] = model_alone(
        args.model, args.device, args.precision, args.engine, args.batch_size, args.model_tiles
    )
    if args.engines_table:
        report["model_alone_by_engine"] = engines_table(args)
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    rows = {"bldgseg run": run, **{f"peer {name}": result for name, result in peers.items()}}
    report["pipelines"] = {
        name: {
            "seconds_process": round(r["seconds"], 1),
            "mpx_s_process": round(megapixels / r["seconds"], 3),
            **({"seconds_loop": r["seconds_loop"]} if "seconds_loop" in r else {}),
            "peak_rss_mb": r["peak_rss_mb"],
            "buildings_or_polygons": r.get("buildings", r.get("polygons")),
        }
        for name, r in rows.items()
    }
    report["bldgseg"] = {
        "inference": run["inference"],
        "end_to_end_over_model_alone": round(megapixels / run["seconds"] / report["model_alone"]["mpx_s"], 3),
        "seconds_processing": run["seconds_processing"],
        **{f"times_faster_than_{name}": round(peers[name]["seconds"] / run["seconds"], 2) for name in peers},
    }
    if gpu:
        report["bldgseg"]["gpu_busy_share"] = run.get("gpu_busy_share")
        report["bldgseg"]["km2_per_hour_at_0.3m"] = round(megapixels * GSD_M**2 / run["seconds"] * 3600, 1)
    print_table(report)
    print(json.dumps(report, indent=2))


def engines_table(args: argparse.Namespace) -> dict[str, float]:
    """Model-alone Mpx/s of each engine/precision this machine can run (CPU)."""
    from bldgseg.errors import BldgsegError
    from bldgseg.precision import openvino_available

    table = {}
    for engine, precision in (
        ("torch", "fp32"),
        ("torch", "bf16"),
        ("openvino", "fp32"),
        ("openvino", "bf16"),
        ("openvino", "int8"),
    ):
        if engine == "openvino" and not openvino_available():
            continue
        try:
            result = model_alone(args.model, "cpu", precision, engine, args.batch_size, args.model_tiles)
        except BldgsegError as exc:
            print(f"{engine} {precision}: {exc}", file=sys.stderr)
            continue
        table[f"{engine} {precision}"] = result["mpx_s"]
    return table


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def print_table(report: dict) -> None:
    """The side-by-side table (Markdown)."""
    print(f"CPU: {report['cpu']} ({report['cores']} cores; flags: {', '.join(report['flags']) or 'none'})")
    print(f"load average at start {report['load_average']}, at end {report['load_average_end']}")
    print(f"bldgseg inference: {report['bldgseg']['inference']}")
    print("\n| pipeline | whole process s | Mpx/s | loop s | peak RSS MiB | buildings/polygons |")
    print("|---|---|---|---|---|---|")
    for name, row in report["pipelines"].items():
        print(
            f"| {name} | {row['seconds_process']} | {row['mpx_s_process']} | {row.get('seconds_loop', '')} "
            f"| {row['peak_rss_mb']} | {row['buildings_or_polygons']} |"
        )
    b = report["bldgseg"]
    ratios = ", ".join(f"{k.removeprefix('times_faster_than_')} {v}x" for k, v in b.items() if "faster" in k)
    print(f"\nbldgseg vs peers (whole process): {ratios or 'no peers run'}")
    print(
        f"model alone {report['model_alone']['mpx_s']} Mpx/s; end to end / model alone "
        f"{b['end_to_end_over_model_alone']}; start-up: --help {report['startup']['help_s']} s, "
        f"info {report['startup']['info_s']} s"
    )
    for name, mpx_s in report.get("model_alone_by_engine", {}).items():
        print(f"model alone, {name}: {mpx_s} Mpx/s")
    if "gpu_busy_share" in b:
        print(f"GPU busy {b['gpu_busy_share']}; {b['km2_per_hour_at_0.3m']} km²/h at 0.3 m")


if __name__ == "__main__":
    main()
