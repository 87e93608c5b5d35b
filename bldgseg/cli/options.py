"""Options shared by several ``bldgseg`` commands, each defined once (after rasterio's ``rio/options.py``).

Aliases (``ModelOpt``, ``OverwriteOpt`` …) are ``Annotated`` types to give a command parameter; the factories
(``model_option(help=…)`` …) build the same option where a command words its help differently, so the flag names
and checks (``min=``) still come from one place. Only typer is imported here: no library code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

SCALING_PANEL = "Scaling out"

MODEL_HELP = "Bundled model name or path to a .safetensors."
DEVICE_HELP = "auto, cpu, cuda or cuda:N."
BATCH_SIZE_HELP = "Tiles per forward pass."
OVERWRITE_HELP = "Replace an existing output."


def output_option(help: str) -> Any:
    """``--output/-o``: each command says what it writes."""
    return typer.Option("--output", "-o", help=help)


def out_folder_option(help: str) -> Any:
    """``--out/-o``: the folder a report or a training run is written to."""
    return typer.Option("--out", "-o", help=help)


def model_option(help: str = MODEL_HELP) -> Any:
    """``--model/-m``: a bundled model name or a checkpoint path."""
    return typer.Option("--model", "-m", help=help)


def device_option(help: str | None = DEVICE_HELP) -> Any:
    """``--device``: auto, cpu, cuda or cuda:N."""
    return typer.Option("--device", help=help)


def batch_size_option(help: str | None = BATCH_SIZE_HELP, min: int | None = 1) -> Any:
    """``--batch-size``: tiles per forward pass."""
    return typer.Option("--batch-size", min=min, help=help)


def tta_option(help: str) -> Any:
    """``--tta``: average the model's output over flips."""
    return typer.Option("--tta", help=help)


def threads_option(help: str | None = None, rich_help_panel: str | None = None) -> Any:
    """``--threads``: work units in parallel on this machine."""
    return typer.Option("--threads", min=1, help=help, rich_help_panel=rich_help_panel)


def threshold_option(help: str, min: float | None = 0.0, max: float | None = 1.0) -> Any:
    """``--threshold``: the probability cut."""
    return typer.Option("--threshold", min=min, max=max, help=help)


def min_area_option(help: str, rich_help_panel: str | None = None) -> Any:
    """``--min-area``: the smallest building (m²)."""
    return typer.Option("--min-area", min=0.0, help=help, rich_help_panel=rich_help_panel)


def simplify_option(help: str) -> Any:
    """``--simplify``: outline simplification tolerance (m)."""
    return typer.Option("--simplify", help=help)


def regularize_option(
    help: str | None = None, negatable: bool = False, rich_help_panel: str | None = None
) -> Any:
    """``--regularize`` (``--regularize/--no-regularize`` when ``negatable``): square off building outlines."""
    name = "--regularize/--no-regularize" if negatable else "--regularize"
    return typer.Option(name, help=help, rich_help_panel=rich_help_panel)


def chunk_size_option(help: str | None = None) -> Any:
    """``--chunk-size``: work unit size in source pixels."""
    return typer.Option("--chunk-size", help=help)


def elevation_option(name: str, help: str | None = None) -> Any:
    """``--ndsm``, ``--dsm`` or ``--dtm``: an elevation raster for ``height_m``."""
    return typer.Option(f"--{name}", help=help)


def instances_option(help: str) -> Any:
    """``--instances/--semantic``: use the instance head (run) or train one (train)."""
    return typer.Option("--instances/--semantic", help=help)


def footprints_layer_option(help: str | None = None) -> Any:
    """``--footprints-layer``: the layer of ``--footprints`` to read."""
    return typer.Option("--footprints-layer", help=help)


def overwrite_option(help: str = OVERWRITE_HELP) -> Any:
    """``--overwrite``: replace an existing output."""
    return typer.Option("--overwrite", help=help)


InputsArg = Annotated[
    list[str],
    typer.Argument(
        help="GeoTIFF/VRT files, folders (searched recursively), URLs (https://, s3://, /vsi...), "
        "STAC Item JSON files or URLs, or .txt files listing inputs."
    ),
]
ModelOpt = Annotated[str, model_option()]
GlobOpt = Annotated[str, typer.Option("--glob", help="File pattern when an input is a folder.")]
BandsOpt = Annotated[str | None, typer.Option("--bands", help="Bands to read as RGB, 1-based, e.g. 3,2,1.")]
SeparateOpt = Annotated[
    bool,
    typer.Option("--separate", help="Every file on its own: touching files are not read as one mosaic."),
]
DeviceOpt = Annotated[str, device_option()]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        help="auto, fp32, bf16, fp16 or int8. auto: bf16 on CPUs with AMX/AVX512-BF16, fp16 on CUDA, else fp32; "
        "int8: the model's shipped int8 OpenVINO IR (CPU).",
    ),
]
EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine", help="auto, torch or openvino. auto: OpenVINO on the CPU when installed, else torch."
    ),
]
BatchSizeOpt = Annotated[int, batch_size_option()]
OverwriteOpt = Annotated[bool, overwrite_option()]

# The "Scaling out" panel of ``bldgseg run``: how work units are spread over processes, machines, SLURM jobs.
ThreadsOpt = Annotated[int, threads_option("Work units in parallel (local).", SCALING_PANEL)]
SchedulerOpt = Annotated[
    str | None,
    typer.Option(
        "--scheduler", help="Address of a running dask.distributed scheduler.", rich_help_panel=SCALING_PANEL
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        help="Worker processes of a local Dask cluster; with --cluster slurm, the number of SLURM jobs.",
        rich_help_panel=SCALING_PANEL,
    ),
]
ClusterOpt = Annotated[
    str | None,
    typer.Option(
        "--cluster", help="'slurm': start workers as SLURM jobs (dask-jobqueue).", rich_help_panel=SCALING_PANEL
    ),
]
SlurmQueueOpt = Annotated[
    str | None, typer.Option("--slurm-queue", help="SLURM partition.", rich_help_panel=SCALING_PANEL)
]
SlurmAccountOpt = Annotated[
    str | None, typer.Option("--slurm-account", help="SLURM account.", rich_help_panel=SCALING_PANEL)
]
SlurmWalltimeOpt = Annotated[
    str, typer.Option("--slurm-walltime", help="Wall time per job, HH:MM:SS.", rich_help_panel=SCALING_PANEL)
]
SlurmCoresOpt = Annotated[
    int, typer.Option("--slurm-cores", min=1, help="CPUs per job.", rich_help_panel=SCALING_PANEL)
]
SlurmMemoryOpt = Annotated[
    str, typer.Option("--slurm-memory", help="Memory per job, e.g. 16GB.", rich_help_panel=SCALING_PANEL)
]
SlurmGpusOpt = Annotated[
    int,
    typer.Option("--slurm-gpus", min=0, help="GPUs per job (--gres=gpu:N).", rich_help_panel=SCALING_PANEL),
]
SlurmInterfaceOpt = Annotated[
    str | None,
    typer.Option("--slurm-interface", help="Network interface, e.g. ib0.", rich_help_panel=SCALING_PANEL),
]
SlurmPrologueOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--slurm-prologue",
        help="Shell line run before each worker, e.g. 'source ~/venv/bin/activate' (repeatable).",
        rich_help_panel=SCALING_PANEL,
    ),
]
SlurmDirectiveOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--slurm-directive",
        help="Extra #SBATCH directive, e.g. --constraint=a100.",
        rich_help_panel=SCALING_PANEL,
    ),
]
PrintJobScriptOpt = Annotated[
    bool,
    typer.Option(
        "--print-job-script",
        help="Print the SLURM job script and exit (no job submitted).",
        rich_help_panel=SCALING_PANEL,
    ),
]
RunDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--run-dir",
        help="Keep finished work units here (part files + manifest); default: a hidden folder next to -o, "
        "removed after success.",
        rich_help_panel=SCALING_PANEL,
    ),
]
ResumeRunOpt = Annotated[
    Path | None,
    typer.Option(
        "--resume",
        help="Continue the interrupted run in this run directory (same options): finished units are kept.",
        rich_help_panel=SCALING_PANEL,
    ),
]
PreloadOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--preload",
        help="Module or .py file imported first, here and in every worker (custom architectures).",
        rich_help_panel=SCALING_PANEL,
    ),
]
