"""Model windows a run executes for each --chunk-size: the price of chunks that give single-chunk results.

    .venv/bin/python scripts/seam_overhead.py --size 4096 --gsd 0.3 --chunk-sizes 512,1024,2048,4096,8192

No raster and no model are needed: the count follows from the raster's size and GSD, the model card's GSD, window
size and overlap, and the halo (--max-building-size). "per chunk" is the earlier rule (each chunk tiled on its own,
a chunk smaller than a window run as one window of its own size): fewer windows, but results that depended on the
chunk size. Windows without a valid pixel are skipped at run time and are counted here.
"""

from __future__ import annotations

import argparse
import math

from bldgseg.modelgrid import ModelGrid
from bldgseg.tiling import model_shape, plan_chunks, plan_layout


def windows_run(size: int, gsd: float, chunk_size: int, args: argparse.Namespace) -> tuple[int, int, int]:
    """(windows run on the raster's grid, windows of the earlier per-chunk rule, chunks)."""
    scale = gsd / args.model_gsd
    grid = ModelGrid.for_raster(size, size, scale, args.tile_size, args.overlap)
    chunks = plan_chunks(size, size, chunk_size, math.ceil(args.max_building_size / gsd))
    on_grid = sum(len(grid.chunk_region(c.read).layout) for c in chunks)
    per_chunk = sum(
        len(plan_layout(*model_shape(c.read, scale), args.tile_size, args.overlap)) for c in chunks
    )
    return on_grid, per_chunk, len(chunks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="raster side in pixels")
    parser.add_argument("--gsd", type=float, default=0.3, help="raster GSD in metres")
    parser.add_argument("--chunk-sizes", default="512,1024,2048,4096,8192")
    parser.add_argument("--model-gsd", type=float, default=0.3)
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--max-building-size", type=float, default=60.0, help="halo in metres")
    args = parser.parse_args()
    single = None
    print(f"{args.size}x{args.size} px at {args.gsd} m, {args.tile_size}-px windows, overlap {args.overlap}")
    print("chunk size | chunks | windows run | x one chunk | per-chunk rule (earlier)")
    for chunk_size in sorted(int(v) for v in args.chunk_sizes.split(",")):
        on_grid, per_chunk, chunks = windows_run(args.size, args.gsd, chunk_size, args)
        single = single or windows_run(args.size, args.gsd, 10**9, args)[0]
        print(f"{chunk_size:>10} | {chunks:>6} | {on_grid:>11} | {on_grid / single:>11.2f} | {per_chunk:>10}")


if __name__ == "__main__":
    main()
