"""Where work units run: local threads (default), a LocalCluster of processes, an existing Dask cluster, SLURM.

Every executor has one job: run ``fn(unit, *args)`` for each work unit and hand back, as each one finishes,
``(unit, outcome)`` where the outcome is the function's (small) return value or the exception it raised. The
functions it runs write their results to the run directory themselves, so nothing large travels back.

``distributed`` and ``dask_jobqueue`` are imported only when a cluster is asked for: the default local run
pays no import cost for them.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bldgseg.band_helpers import spare_cores
from bldgseg.errors import BldgsegError, DeviceError, InputError
from bldgseg.remote import is_remote

__all__ = [
    "DaskExecutor",
    "check_executor_options",
    "Executor",
    "LocalExecutor",
    "SlurmOptions",
    "local_cluster_kwargs",
    "open_executor",
    "slurm_cluster",
    "slurm_cluster_kwargs",
    "task_resources",
    "UNITS_AHEAD",
]

#: Seconds to wait for the first worker of an existing cluster before giving up.
WORKER_WAIT_S = 60.0


@dataclass
class SlurmOptions:
    """One SLURM job per Dask worker (``jobs`` of them), each running one work unit at a time.

    ``cores`` CPUs per job (PyTorch and GDAL use them), ``memory`` per job, ``gpus`` per job (``--gres=gpu:N``;
    the worker then declares ``GPU=N`` so inference tasks can ask for it). ``prologue`` lines run before the
    worker starts (e.g. ``source /path/to/.venv/bin/activate`` or ``module load cuda``); ``extra_directives``
    are added as ``#SBATCH`` lines (e.g. ``--constraint=a100``). ``interface`` is the network interface the
    scheduler (on the submitting node) and workers talk over, e.g. ``ib0``.
    """

    jobs: int = 1
    queue: str | None = None
    account: str | None = None
    walltime: str = "01:00:00"
    cores: int = 4
    memory: str = "16GB"
    gpus: int = 0
    interface: str | None = None
    prologue: Sequence[str] = ()
    extra_directives: Sequence[str] = ()
    local_directory: str | None = None
    log_directory: str | None = None
    python: str | None = None
    scheduler_options: dict[str, Any] = field(default_factory=dict)


Outcome = tuple[Any, Any]  # (unit, return value or exception)


class Executor(ABC):
    """Runs work units; see the module docstring."""

    description = "executor"
    #: Threads PyTorch should use in each worker (None: leave the worker's default).
    torch_threads: int | None = None
    #: True when the work runs in other processes (possibly other machines).
    remote = False
    #: Units of one process on the model at once (None: no limit; each worker runs as many units as it has
    #: threads). An executor that runs more units than this lets the others read and vectorize meanwhile.
    model_slots: int | None = None
    #: Helper processes that measure row bands of a large unit while its first band is measured (0: none).
    post_processes: int = 0

    def task_resources(self, device: str) -> dict[str, float] | None:
        return None

    @abstractmethod
    def map_units(
        self,
        fn: Callable[..., Any],
        units: Sequence[Any],
        *args: Any,
        resources: dict[str, float] | None = None,
    ) -> Iterator[Outcome]:
        """Run ``fn(unit, *args)`` for every unit; yield ``(unit, result or exception)`` as they finish."""

    def check_paths(self, paths: Iterable[str]) -> None:  # noqa: B027 (default: same machine, nothing to check)
        """Raise :class:`InputError` when the workers cannot see one of ``paths`` (shared filesystem)."""

    def close(self) -> None:  # noqa: B027 (default: nothing to release)
        """Release the executor's resources."""


#: Units a :class:`LocalExecutor` runs beyond its ``threads``: while ``threads`` units are on the model, this
#: many more read their chunk, or are vectorized, measured and written (bounded: memory stays flat).
UNITS_AHEAD = 1


class LocalExecutor(Executor):
    """A thread pool in this process: ``threads`` units on the model at once (PyTorch already uses every core
    for one), and ``ahead`` (default :data:`UNITS_AHEAD`) more whose other stages overlap the model."""

    def __init__(self, threads: int = 1, ahead: int | None = None):
        self.threads = max(1, int(threads))
        self.ahead = max(0, UNITS_AHEAD if ahead is None else int(ahead))
        self.model_slots = self.threads
        # spare cores measure row bands of each large unit in helper processes (bldgseg.pipeline.bands)
        self.post_processes = spare_cores()
        self.description = f"local threads ({self.threads})"

    def map_units(self, fn, units, *args, resources=None):
        if not units:
            return
        in_flight = self.threads + self.ahead
        pool = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="bldgseg-unit")
        pending: dict[Future, Any] = {}
        queue = iter(units)
        try:
            # Only as many units as run at once are submitted, so an interrupted run has few of them in flight.
            for unit in queue:
                pending[pool.submit(fn, unit, *args)] = unit
                if len(pending) >= in_flight:
                    break
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    unit = pending.pop(future)
                    exc = future.exception()
                    yield unit, (exc if exc is not None else future.result())
                    nxt = next(queue, None)
                    if nxt is not None:
                        pending[pool.submit(fn, nxt, *args)] = nxt
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor(Executor):
    """A ``distributed.Client`` on a cluster (a LocalCluster we start, an existing scheduler, or SLURM)."""

    remote = True

    def __init__(
        self, client: Any, cluster: Any = None, description: str = "dask", gpu_workers: bool = False
    ):
        self.client = client
        self.cluster = cluster
        #: Dask settings held while this executor's own cluster runs (restored by :meth:`close`).
        self.dask_settings: Any = None
        self.description = description
        self.gpu_workers = gpu_workers
        self.session = os.urandom(4).hex()

    def workers_with_gpu(self) -> bool:
        info = self.client.scheduler_info(n_workers=-1)
        return any(w.get("resources", {}).get("GPU", 0) > 0 for w in info.get("workers", {}).values())

    def task_resources(self, device: str) -> dict[str, float] | None:
        """``{"GPU": 1}`` when inference runs on CUDA; the run must then have workers that declare a GPU."""
        gpus = self.gpu_workers or self.workers_with_gpu()
        if device.lower().startswith("cuda") and not gpus:
            raise DeviceError(
                f"device {device!r}: no worker of {self.description} declares a GPU resource; "
                "start the workers with `--resources GPU=1` (or use --device cpu / auto)"
            )
        return task_resources(device, gpus)

    def map_units(self, fn, units, *args, resources=None):
        if not units:
            return
        from distributed import as_completed

        futures = {}
        for unit in units:
            key = f"bldgseg-unit-{getattr(unit, 'uid', id(unit))}-{self.session}"
            future = self.client.submit(fn, unit, *args, key=key, resources=resources, pure=False)
            futures[future] = unit
        try:
            for future in as_completed(list(futures), loop=self.client.loop):
                unit = futures.pop(future)
                try:
                    outcome = future.result()
                except Exception as exc:  # KilledWorker, task errors: reported per unit by the caller
                    outcome = exc
                future.release()
                yield unit, outcome
        finally:
            if futures:
                self.client.cancel(list(futures), force=True)

    def check_paths(self, paths: Iterable[str]) -> None:
        paths = sorted({p for p in paths if not is_remote(p)})  # URLs are read by each worker through GDAL
        if not paths:
            return
        seen = self.client.run(_missing_paths, paths)
        for worker, missing in seen.items():
            if missing:
                raise InputError(
                    f"{missing[0]}: not visible from worker {worker} ({len(missing)} path(s) missing); "
                    "inputs, model and --run-dir must be on a filesystem every worker shares"
                )

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()
            if self.dask_settings is not None:
                self.dask_settings.__exit__(None, None, None)
                self.dask_settings = None


def _missing_paths(paths: list[str]) -> list[str]:
    return [p for p in paths if not os.path.exists(p)]


def task_resources(device: str, gpu_workers: bool) -> dict[str, float] | None:
    """Resources an inference task asks for: a GPU when the run's device is CUDA (or auto with GPU workers)."""
    device = device.lower()
    if device.startswith("cuda") or (device == "auto" and gpu_workers):
        return {"GPU": 1}
    return None


def local_cluster_kwargs(
    workers: int, device: str = "cpu", preload: Sequence[str] = (), cuda_devices: int | None = None
) -> dict[str, Any]:
    """Keyword arguments of the ``LocalCluster`` behind ``--workers N``: N processes of one thread each.

    With a CUDA device each worker declares ``GPU=1`` (worker *i* uses GPU *i* mod the number of GPUs).
    """
    if workers < 1:
        raise InputError(f"--workers {workers}: give 1 or more worker processes")
    kwargs: dict[str, Any] = {
        "n_workers": workers,
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": None,
        "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"},  # its HTTP endpoint on a free port
        "silence_logs": 40,
        "preload": list(preload),
    }
    wants_cuda = device.lower().startswith("cuda") or (device.lower() == "auto" and bool(cuda_devices))
    if wants_cuda:
        kwargs["resources"] = {"GPU": 1}
    return kwargs


def slurm_cluster_kwargs(options: SlurmOptions, preload: Sequence[str] = ()) -> dict[str, Any]:
    """Keyword arguments of ``dask_jobqueue.SLURMCluster`` for ``options`` (one worker process per job)."""
    if options.cores < 1:
        raise InputError(f"--slurm-cores {options.cores}: give 1 or more CPUs per job")
    if options.gpus < 0:
        raise InputError(f"--slurm-gpus {options.gpus}: give 0 or more GPUs per job")
    worker_args: list[str] = []
    directives = list(options.extra_directives)
    if options.gpus:
        directives.insert(0, f"--gres=gpu:{options.gpus}")
        worker_args += ["--resources", f"GPU={options.gpus}"]
    for module in preload:
        worker_args += ["--preload", module]
    prologue = [f"export OMP_NUM_THREADS={options.cores}", *options.prologue]
    kwargs: dict[str, Any] = {
        "queue": options.queue,
        "account": options.account,
        "walltime": options.walltime,
        # one worker process with one thread per job: one unit at a time; PyTorch uses the job's CPUs
        "cores": 1,
        "processes": 1,
        "job_cpu": options.cores,
        "memory": options.memory,
        "job_name": "bldgseg",
        "job_extra_directives": directives,
        "worker_extra_args": worker_args,
        "job_script_prologue": prologue,
        "scheduler_options": dict(options.scheduler_options),
    }
    for key, value in (
        ("interface", options.interface),
        ("local_directory", options.local_directory),
        ("log_directory", options.log_directory),
        ("python", options.python),
    ):
        if value:
            kwargs[key] = value
    return kwargs


def slurm_cluster(options: SlurmOptions, preload: Sequence[str] = ()) -> Any:
    """A ``dask_jobqueue.SLURMCluster`` (not yet scaled). Needs the ``slurm`` extra (dask-jobqueue)."""
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError as exc:
        raise BldgsegError(
            "--cluster slurm needs dask-jobqueue; install it with `pip install 'bldgseg[slurm]'`"
        ) from exc
    return SLURMCluster(**slurm_cluster_kwargs(options, preload))


@contextmanager
def open_executor(
    *,
    threads: int = 1,
    workers: int | None = None,
    scheduler: str | None = None,
    cluster: str | None = None,
    slurm: SlurmOptions | None = None,
    device: str = "auto",
    preload: Sequence[str] = (),
) -> Iterator[Executor]:
    """The executor a run asked for; clusters started here are shut down on exit."""
    executor = make_executor(
        threads=threads,
        workers=workers,
        scheduler=scheduler,
        cluster=cluster,
        slurm=slurm,
        device=device,
        preload=preload,
    )
    try:
        yield executor
    finally:
        executor.close()


def check_executor_options(
    *, workers: int | None = None, scheduler: str | None = None, cluster: str | None = None
) -> None:
    """Refuse combinations that do not go together (before any work is done)."""
    if cluster not in (None, "local", "slurm"):
        raise InputError(f"--cluster {cluster!r} is not known; use --cluster slurm (or leave it out)")
    if scheduler and (workers or cluster == "slurm"):
        raise InputError(
            "--scheduler uses an existing cluster's own workers; leave out --workers / --cluster with it"
        )
    if workers is not None and workers < 1:
        raise InputError(f"--workers {workers}: give 1 or more workers")


def make_executor(
    *,
    threads: int = 1,
    workers: int | None = None,
    scheduler: str | None = None,
    cluster: str | None = None,
    slurm: SlurmOptions | None = None,
    device: str = "auto",
    preload: Sequence[str] = (),
) -> Executor:
    """See :func:`open_executor`; the caller closes the result."""
    check_executor_options(workers=workers, scheduler=scheduler, cluster=cluster)
    if cluster == "slurm":
        options = slurm or SlurmOptions()
        if workers:
            options.jobs = workers
        return _slurm_executor(options, preload)
    if scheduler:
        return _scheduler_executor(scheduler)
    if workers:
        return _local_cluster_executor(workers, device, preload)
    return LocalExecutor(threads)


def _scheduler_executor(address: str) -> DaskExecutor:
    from distributed import Client

    try:
        client = Client(address, timeout="20s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise InputError(
            f"scheduler {address}: cannot connect ({exc}); check the address and that it is running"
        ) from exc
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except TimeoutError as exc:
        client.close()
        raise BldgsegError(
            f"scheduler {address}: no worker joined within {WORKER_WAIT_S:.0f} s; start workers with "
            f"`dask worker {address} --nthreads 1`"
        ) from exc
    return DaskExecutor(client, description=f"scheduler {address}")


#: How long a cluster we start waits for a dead worker (killed, out of memory) to come back under its name
#: before dropping it for good. Dask's default (``distributed.deploy.lost-worker-timeout``, 15 s) is shorter
#: than a worker's restart on a busy machine (PyTorch and GDAL imports): every worker could be dropped, and
#: the run would then wait forever for workers.
LOST_WORKER_TIMEOUT = "10 minutes"


def cluster_dask_settings() -> Any:
    """The Dask settings (an entered ``dask.config.set``) for the lifetime of a cluster this process starts."""
    import dask

    return dask.config.set({"distributed.deploy.lost-worker-timeout": LOST_WORKER_TIMEOUT})


def _local_cluster_executor(workers: int, device: str, preload: Sequence[str]) -> DaskExecutor:
    from distributed import Client, LocalCluster

    cuda = _cuda_count()
    settings = cluster_dask_settings()
    try:
        cluster = LocalCluster(**local_cluster_kwargs(workers, device, preload, cuda))
    except BaseException:
        settings.__exit__(None, None, None)
        raise
    client = Client(cluster, set_as_default=False)
    executor = DaskExecutor(
        client,
        cluster,
        description=f"local cluster ({workers} worker processes)",
        gpu_workers="resources" in local_cluster_kwargs(workers, device, preload, cuda),
    )
    executor.dask_settings = settings
    executor.torch_threads = max(1, (os.cpu_count() or 1) // workers)
    return executor


def _slurm_executor(options: SlurmOptions, preload: Sequence[str]) -> DaskExecutor:
    from distributed import Client

    settings = cluster_dask_settings()
    try:
        cluster = slurm_cluster(options, preload)
    except BaseException:
        settings.__exit__(None, None, None)
        raise
    try:
        cluster.scale(jobs=options.jobs)
        client = Client(cluster, set_as_default=False)
    except Exception:
        cluster.close()
        settings.__exit__(None, None, None)
        raise
    executor = DaskExecutor(
        client,
        cluster,
        description=f"SLURM ({options.jobs} job(s), queue {options.queue or 'default'})",
        gpu_workers=options.gpus > 0,
    )
    executor.dask_settings = settings
    executor.torch_threads = options.cores
    return executor


def _cuda_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no usable CUDA is the same as none
        return 0
