"""The "Scaling out" flags of ``bldgseg run`` as one dataclass: checks, SLURM options, ``--print-job-script``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from bldgseg.cli.common import call

if TYPE_CHECKING:
    from bldgseg.executors import SlurmOptions


@dataclass(frozen=True)
class ExecutorOptions:
    """The executor flags, named as the ``run`` command's parameters (see ``cli/options.py``)."""

    scheduler: str | None = None
    threads: int = 1
    workers: int | None = None
    cluster: str | None = None
    slurm_queue: str | None = None
    slurm_account: str | None = None
    slurm_walltime: str = "01:00:00"
    slurm_cores: int = 4
    slurm_memory: str = "16GB"
    slurm_gpus: int = 0
    slurm_interface: str | None = None
    slurm_prologue: list[str] | None = None
    slurm_directive: list[str] | None = None
    print_job_script: bool = False
    run_dir: Path | None = None
    resume: Path | None = None
    preload: list[str] | None = None

    @classmethod
    def from_flags(cls, flags: Mapping[str, Any]) -> ExecutorOptions:
        """Pick these fields out of a command's flags and check that they go together."""
        options = cls(**{field.name: flags[field.name] for field in dataclasses.fields(cls)})
        options.check()
        return options

    def check(self) -> None:
        """Refuse flags that contradict each other, as usage errors (exit code 2)."""
        if self.run_dir is not None and self.resume is not None and self.run_dir.resolve() != self.resume.resolve():
            raise typer.BadParameter("--run-dir and --resume name different folders; give one of them")
        if self.cluster is not None and self.cluster != "slurm":
            raise typer.BadParameter(
                f"--cluster {self.cluster!r}: only 'slurm' is supported", param_hint="--cluster"
            )

    def slurm_options(self) -> SlurmOptions | None:
        """The library's SLURM settings with ``--cluster slurm``, else None."""
        if self.cluster != "slurm":
            return None
        from bldgseg.executors import SlurmOptions

        return SlurmOptions(
            jobs=self.workers or 1,
            queue=self.slurm_queue,
            account=self.slurm_account,
            walltime=self.slurm_walltime,
            cores=self.slurm_cores,
            memory=self.slurm_memory,
            gpus=self.slurm_gpus,
            interface=self.slurm_interface,
            prologue=tuple(self.slurm_prologue or ()),
            extra_directives=tuple(self.slurm_directive or ()),
        )

    def run_config_fields(self) -> dict[str, Any]:
        """The executor part of the library's ``RunConfig``, as keyword arguments."""
        return {
            "scheduler": self.scheduler,
            "threads": self.threads,
            "workers": self.workers,
            "cluster": self.cluster,
            "slurm": self.slurm_options(),
            "run_dir": self.resume or self.run_dir,
            "resume": self.resume is not None,
            "preload": tuple(self.preload or ()),
        }


def echo_job_script(options: ExecutorOptions) -> None:
    """``--print-job-script``: show the SLURM job script a worker would be started with; submit nothing."""
    from bldgseg.executors import slurm_cluster

    slurm = options.slurm_options()
    if slurm is None:
        raise typer.BadParameter("--print-job-script needs --cluster slurm")
    job = call(slurm_cluster, slurm, tuple(options.preload or ()))
    try:
        typer.echo(job.job_script())
    finally:
        job.close()
