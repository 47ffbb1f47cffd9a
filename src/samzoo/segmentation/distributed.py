"""Blockwise segmentation on dask.distributed: a ``LocalCluster`` or any running scheduler.

Why dask.distributed and not a home-made pool: it already schedules tasks on workers of one
machine or of a Slurm/PBS cluster (dask-jobqueue), moves data between them, reruns the tasks of
a worker that died and has a dashboard. samzoo's part is small: ``DaskExecutor`` runs each pass
of ``blockwise.segment_blockwise`` as ``client.map`` over blocks.

Design for a cluster (docs/ARCHITECTURE.md, "Blockwise and distributed"):
- the model is scattered once to every worker (``share``); embeddings never leave the worker
  that computed them -- a task encodes its block, decodes the maps and drops the features;
- decoder maps, seed ids and labels live in the zarr scratch store next to the output, which
  must be on a file system all workers see; tasks read and write it directly, so what crosses the
  network through the scheduler is only block coordinates, small per-block results (counts,
  first-pixel keys, border pairs, overlap counts) and the id lookup tables (scattered once);
- every task writes only its own block's chunks and is idempotent, so a task lost with its
  worker is simply run again (dask's ``allowed-failures``; ``retries`` covers transient errors);
- scattered values (the model, lookup tables) cannot be recomputed by dask: when a dead worker
  held the last copy, the tasks that need it are cancelled ("lost dependencies"). The executor
  keeps each shared value, scatters it again and reruns just the cancelled tasks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tqdm.auto import tqdm

from ..errors import InputError


class DaskExecutor:
    """Runs block tasks through a ``distributed.Client`` (see the module docstring)."""

    def __init__(self, client, *, retries: int = 2) -> None:
        self.client = client
        self.retries = retries
        self._shared: dict[str, list[Any]] = {}  # key handed out by share -> [value, its live future]

    @property
    def workers(self) -> int:
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def share(self, value: Any) -> Any:
        """Send ``value`` to every worker once; tasks receive it through the returned future."""
        future = self.client.scatter(value, broadcast=True, hash=False)
        self._shared[future.key] = [value, future]
        return future

    def _live(self, value: Any) -> Any:
        """A shared value's future, scattered again if the cluster lost it; other values as they are."""
        entry = self._shared.get(getattr(value, "key", None))
        if entry is None:
            return value
        if entry[1].status != "finished":
            entry[1] = self.client.scatter(entry[0], broadcast=True, hash=False)
        return entry[1]

    def map(self, function: Callable, items: Sequence[Any], *, desc: str, progress: bool, **kwargs) -> list[Any]:
        """``function(item, **kwargs)`` for every item on the cluster, results in order. A task's own
        error is raised; tasks cancelled because a shared value died with a worker run again (up
        to ``retries`` times) with the value scattered anew."""
        from distributed import as_completed

        items = list(items)
        results: list[Any] = [None] * len(items)
        pending = list(range(len(items)))
        with tqdm(total=len(items), desc=desc, disable=not progress, leave=False) as bar:
            for _ in range(self.retries + 1):
                if not pending:
                    break
                shared = {name: self._live(value) for name, value in kwargs.items()}
                futures = self.client.map(function, [items[i] for i in pending], pure=False, retries=self.retries,
                                          **shared)
                for future in as_completed(futures):
                    bar.update(future.status == "finished")
                cancelled = [i for i, future in zip(pending, futures) if future.status == "cancelled"]
                for i, future in zip(pending, futures):
                    if future.status != "cancelled":
                        results[i] = future.result()  # raises the task's own error
                pending = cancelled
        if pending:
            raise RuntimeError(f"{desc}: {len(pending)} tasks were cancelled {self.retries + 1} times "
                               "(shared data lost with dask workers)")
        return results


@contextlib.contextmanager
def dask_executor(*, workers: int | None = None, scheduler: str | None = None, threads_per_worker: int = 1,
                  memory_limit: str | None = "auto", timeout: float = 10.0) -> Iterator[DaskExecutor]:
    """A ``DaskExecutor`` on a new ``LocalCluster`` of ``workers`` processes, or on the running
    scheduler at ``scheduler`` (e.g. ``tcp://10.0.0.5:8786``); closed again on exit."""
    from distributed import Client, LocalCluster

    if (workers is None) == (scheduler is None):
        raise InputError("give either a number of workers or a scheduler address")
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError) as err:
            raise InputError(f"cannot reach the dask scheduler at {scheduler}: {' '.join(str(err).split())[:160]}"
                             ) from None
        try:
            yield DaskExecutor(client)
        finally:
            client.close()
        return
    if workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    with LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                      dashboard_address=None, memory_limit=memory_limit) as cluster, Client(cluster) as client:
        yield DaskExecutor(client)
