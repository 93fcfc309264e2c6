"""The protocol's stages as submitit job arrays (docs/protocol.md; the simulator's sweeps use the same executor:
:class:`simulations.executors.Submitit`).

    python -m empirical protocol --preset paper ... --cluster slurm --slurm-partition gpu --out results/protocol
    python -m empirical protocol --preset smoke ... --cluster local --workers 2 --out results/protocol

Waves, each a job array of :class:`empirical.protocol.Plan` stages (every stage skips what is done, so a resubmission
resumes)::

    pretrain (one job per optimizer) → splits (one job) → retrain (one per forget set) and unlearning runs (one per
    pretrain × forget set × method × optimizer) → evaluation (one per unlearning run) → summary (one job)

On Slurm every wave is submitted at once with ``afterok`` dependencies on the one before and the command returns with
the job ids. ``debug`` (in this process, for tests) runs the waves in order. ``local`` (subprocesses on this machine,
``workers`` at a time) follows the stages' own dependencies instead of the waves (:func:`dependencies`): a job starts
as soon as the stages it needs are done, so a short pretraining does not leave a worker idle while a long one runs
(the waves' barrier cost the CPU protocol a core for the length of SAM's extra epochs).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from simulations.errors import ConfigError

CLUSTERS = ("slurm", "local", "debug")


class StageCall:
    """A picklable call of one plan stage: rebuilds the plan from its arguments in the job, then runs the stage."""

    def __init__(self, arguments: dict[str, Any], threads: int | None = None, owned: bool = False):
        """``owned``: the job exits when the process that made this call is gone (local jobs: a protocol killed
        outright leaves no stage training and writing behind it)."""
        from simulations.executors import process_start

        self.arguments, self.threads = arguments, threads
        self.owner = (os.getpid(), process_start()) if owned else None

    def __call__(self, stage: str, args: tuple) -> Any:
        from .protocol import make_plan

        if self.owner is not None:
            from simulations.executors import watch_owner

            watch_owner(*self.owner)

        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        plan = make_plan(**self.arguments)
        value = getattr(plan, stage)(*args)
        return str(value) if isinstance(value, Path) else value


def waves(plan) -> list[list[tuple[str, tuple]]]:
    """The protocol's stages as waves of (stage, arguments); a wave needs every earlier one."""
    jobs = plan.unlearn_jobs()
    return [[("pretrain", (opt,)) for opt in plan.pre_opts],
            [("splits", ())],
            [("retrain", (name,)) for name in plan.forget_sets] + [("unlearn_run", job) for job in jobs],
            [("unlearn", job) for job in jobs],
            [("summary", ())]]


def dependencies(plan) -> list[tuple[tuple[str, tuple], list[int]]]:
    """Every stage of the protocol with the positions of the stages it needs, in the order of priority (a ready job
    earlier in the list starts first): the pretrainings; the forget sets (made from the first pretraining's split);
    the retrains (every evaluation of their forget set waits for them); each unlearning run with its evaluation in
    one job (:meth:`empirical.protocol.Plan.unlearn`: its pretraining and its forget set's retrain); the summary."""
    nodes: list[tuple[tuple[str, tuple], list[int]]] = []
    pre = {opt: len(nodes) + k for k, opt in enumerate(plan.pre_opts)}
    nodes += [(("pretrain", (opt,)), []) for opt in plan.pre_opts]
    splits = len(nodes)
    nodes.append((("splits", ()), [pre[plan.pre_opts[0]]]))
    retrain = {name: len(nodes) + k for k, name in enumerate(plan.forget_sets)}
    nodes += [(("retrain", (name,)), [splits]) for name in plan.forget_sets]
    jobs = plan.unlearn_jobs()
    evals = [len(nodes) + k for k in range(len(jobs))]
    nodes += [(("unlearn", job), [pre[job[0]], retrain[job[1]]]) for job in jobs]
    nodes.append((("summary", ()), evals))
    return nodes


def _run_graph(executor, call, nodes: list[tuple[tuple[str, tuple], list[int]]], workers: int,
               poll: float = 0.5) -> list:
    """Run the stages of :func:`dependencies`: at most ``workers`` jobs in flight, each started as soon as every
    stage it needs has finished (the first ready one in list order). A failed job raises here with its traceback;
    the jobs still running are then waited for, and nothing that needed the failed one starts."""
    import time

    done: set[int] = set()
    started: set[int] = set()
    running: dict[int, Any] = {}
    values: dict[int, Any] = {}
    failure: BaseException | None = None
    while len(done) < len(nodes):
        if failure is None:
            for k, ((stage, arg), needs) in enumerate(nodes):
                if len(running) >= workers:
                    break
                if k not in started and all(n in done for n in needs):
                    started.add(k)
                    running[k] = executor.submit(call, stage, arg)
        if not running:
            if failure is not None:
                raise failure
            raise ConfigError("the protocol's stage graph has a cycle or a missing stage")  # cannot happen
        finished = [k for k, job in running.items() if job.done()]
        if not finished:
            time.sleep(poll)
            continue
        for k in finished:
            job = running.pop(k)
            try:
                values[k] = job.result()
            except BaseException as exc:  # noqa: BLE001 - re-raised once the running jobs have ended
                failure = failure or exc
            else:
                done.add(k)
    return [values[k] for k in range(len(nodes))]


def _run_wave(executor, call, stages: list[str], args: list[tuple]) -> list:
    """Run one wave (``debug``): one job array run in order (the debug executor runs a job when its result is asked
    for). A failed job raises here with its traceback."""
    return [job.result() for job in executor.map_array(call, stages, args)]


def run_on_cluster(plan, cluster: str, folder: Path, workers: int = 2, options: dict | None = None,
                   threads: int | None = None) -> dict[str, Any]:
    """Run (local, debug) or submit (slurm) the protocol of ``plan`` as job arrays; returns the summary, or on Slurm
    the job ids of each wave."""
    from simulations.executors import Submitit

    if cluster not in CLUSTERS:
        raise ConfigError(f"--cluster {cluster!r}: choose one of {', '.join(CLUSTERS)}")
    if workers < 1:
        raise ConfigError(f"--workers {workers}: must be >= 1")
    executor = Submitit(Path(folder), {"cluster": cluster, **(options or {})}).executor
    call = StageCall(plan.arguments(), threads, owned=cluster == "local")
    if cluster == "local":
        return _run_graph(executor, call, dependencies(plan), workers)[-1]
    previous: list = []
    submitted: list[list[str]] = []
    result: Any = None
    for wave in waves(plan):
        stages, args = [w[0] for w in wave], [w[1] for w in wave]
        if cluster == "slurm":
            if previous:
                executor.update_parameters(slurm_additional_parameters={
                    "dependency": "afterok:" + ":".join(str(j.job_id) for j in previous)})
            previous = executor.map_array(call, stages, args)
            submitted.append([str(j.job_id) for j in previous])
            continue
        result = _run_wave(executor, call, stages, args)[-1]
    if cluster == "slurm":
        return {"submitted": submitted, "folder": str(folder)}
    return result
