"""Run sweep jobs here, in local worker processes, or as Ray tasks.

Ray is an optional extra (``pip install 'onnxprune[ray]'``); without it ``ray`` is refused in
one line. Results come back in any order; the caller sorts them by job index, so the same
seeds give the same table locally and on Ray.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
from collections.abc import Sequence

from onnxprune.errors import InputError, first_line

__all__ = ["RAY_INSTALL_HINT", "require_ray", "run_jobs"]

RAY_INSTALL_HINT = "pip install 'onnxprune[ray]'"


def require_ray():
    """The ``ray`` module, or an ``InputError`` naming the install command."""
    try:
        import ray
    except ImportError:
        raise InputError(f"--ray needs the 'ray' extra: {RAY_INSTALL_HINT}") from None
    return ray


def _on_ray(jobs: Sequence, objective: str, address: str) -> list[dict]:
    from onnxprune.search.sweep import run_job

    ray = require_ray()
    started = not ray.is_initialized()
    if started:
        if address == "local":
            ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        else:
            try:
                ray.init(address=address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as error:
                first = first_line(error, "")
                raise InputError(f"--ray {address}: no Ray cluster to join ({first})") from None
    try:
        task = ray.remote(num_cpus=1)(run_job)
        return ray.get([task.remote(job, objective) for job in jobs])
    finally:
        if started:
            ray.shutdown()


def _quiet_worker() -> None:
    """Worker processes report through their rows; their libraries' INFO logs stay quiet."""
    logging.disable(logging.INFO)


def run_jobs(jobs: Sequence, objective: str, workers: int, ray: str | None) -> list[dict]:
    """Every job's row: on Ray when ``ray`` is set, else in ``workers`` processes."""
    from onnxprune.search.sweep import run_job, start_method

    if ray is not None:
        return _on_ray(jobs, objective, ray)
    work = functools.partial(run_job, objective=objective)
    if workers <= 1 or len(jobs) <= 1:
        return [work(job) for job in jobs]
    with multiprocessing.get_context(start_method()).Pool(
        min(workers, len(jobs)), initializer=_quiet_worker
    ) as pool:
        return pool.map(work, jobs)
