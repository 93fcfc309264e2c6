"""Where work units run: in this process, a local process pool, or a Slurm cluster through submitit job arrays.

Every executor runs the same function, :func:`run_unit`, on lists of configurations and yields each unit's
results as it finishes; the caller writes them to the cache, so an interrupted sweep keeps what finished.
Users who outgrow one machine change one flag: ``--executor submitit --slurm-partition NAME``.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import SimConfig
from .errors import ConfigError

EXECUTORS = ("inprocess", "pool", "submitit")


def run_unit(configs: list[dict], device: str = "cpu", save_coefficients: bool = False,
             memory_bytes: float = 2 * 2**30, threads: int | None = None, store: str | None = None):
    """Run a list of configurations (given as dicts, so the call pickles small).

    With ``store`` (a cache folder) the worker writes its own chunk there and returns only the result rows, so
    the writing happens in parallel and little travels back; without it, the RunResults come back."""
    import torch

    from .engine import simulate

    if threads:
        torch.set_num_threads(threads)
    results = simulate([SimConfig(**c) for c in configs], device=device, save_coefficients=save_coefficients,
                       memory_bytes=memory_bytes)
    if store is None:
        return results
    from .store import ResultStore

    return ResultStore(Path(store)).write(results)


class InProcess:
    def run(self, units: list[list[SimConfig]], **kw) -> Iterator[list]:
        for unit in units:
            yield run_unit([c.to_dict() for c in unit], **kw)


def process_start(pid: int | None = None) -> str | None:
    """The start time of process ``pid`` (this one by default) as the kernel records it (``/proc/PID/stat`` field
    22), which with the pid names one process even after pids wrap around; None where there is no ``/proc``."""
    try:
        stat = Path(f"/proc/{pid or os.getpid()}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def watch_owner(pid: int, start: str | None, interval_s: float = 0.5) -> None:
    """In a job process started for another process (a protocol stage run by submitit's local executor, whose
    parent is submitit's controller, not the protocol): exit as soon as that owner ``(pid, start)`` is gone, so no
    orphan keeps training and writing. A daemon thread polls ``/proc``; without ``/proc`` it does nothing."""
    import threading
    import time

    if start is None:
        return

    def watch() -> None:
        while True:
            if process_start(pid) != start:
                os._exit(1)
            time.sleep(interval_s)

    threading.Thread(target=watch, name="watch-owner", daemon=True).start()


def watch_parent(parent_pid: int, interval_s: float = 0.5) -> None:
    """In a pool worker: exit as soon as the parent is gone (killed outright, by SIGKILL or by a signal nothing
    handles, so it could not stop its workers), so no orphan keeps computing and writing. A daemon thread polls the
    parent pid."""
    import threading
    import time

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(interval_s)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


class ProcessPool:
    """Local worker processes (spawned, one torch thread each). They exit with their parent: a parent killed outright
    (SIGKILL) is noticed by :func:`watch_parent`; a parent interrupted (Ctrl-C, SIGTERM through the sweep's handler,
    an error) stops its workers itself, without waiting for the units in flight."""

    def __init__(self, workers: int):
        self.workers = max(1, workers)

    def run(self, units: list[list[SimConfig]], **kw) -> Iterator[list]:
        import multiprocessing as mp

        kw = {**kw, "threads": 1}
        pool = cf.ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"), initializer=watch_parent,
                                      initargs=(os.getpid(),))
        try:
            futures = [pool.submit(run_unit, [c.to_dict() for c in unit], **kw) for unit in units]
            for fut in cf.as_completed(futures):
                yield fut.result()
        except BaseException:  # also GeneratorExit: the caller stopped early
            stop_workers(pool)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def stop_workers(pool: cf.ProcessPoolExecutor, timeout_s: float = 5.0) -> None:
    """Terminate a pool's worker processes now and reap them (a unit cut short leaves at most a temporary file: its
    chunk is written atomically, so it is simply computed again by the next run)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    for proc in processes:
        proc.join(timeout_s)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout_s)


class Submitit:
    """submitit job arrays: ``cluster`` is ``slurm`` (default on a cluster), ``local`` or ``debug``."""

    def __init__(self, folder: Path, options: dict[str, Any]):
        try:
            import submitit
        except ImportError:
            raise ConfigError("--executor submitit needs the submitit package: pip install submitit") from None
        options = dict(options)
        cluster = options.pop("cluster", None)
        self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        params = {"timeout_min": options.pop("timeout_min", 60), **options}
        self.executor.update_parameters(**params)

    def run(self, units: list[list[SimConfig]], **kw) -> Iterator[list]:
        if not units:
            return
        args = [[c.to_dict() for c in unit] for unit in units]
        jobs = self.executor.map_array(_SubmititCall(kw), args)
        pending = list(jobs)
        while pending:
            finished = [j for j in pending if j.done()]
            if not finished:
                import time

                time.sleep(0.2)
                continue
            for job in finished:
                pending.remove(job)
                yield job.result()


class _SubmititCall:
    def __init__(self, kw: dict[str, Any]):
        self.kw = kw

    def __call__(self, configs: list[dict]):
        return run_unit(configs, **self.kw)


def make_executor(name: str, workers: int = 2, folder: Path | None = None, options: dict[str, Any] | None = None):
    if name == "inprocess":
        return InProcess()
    if name == "pool":
        return ProcessPool(workers)
    if name == "submitit":
        return Submitit(Path(folder or "submitit"), options or {})
    raise ConfigError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
