"""Blockwise segmentation on a real dask.distributed LocalCluster (2 worker processes)."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import zarr

from samzoo.errors import InputError
from samzoo.segmentation.blockwise import segment_blockwise
from samzoo.segmentation.distributed import dask_executor
from samzoo.stores import ArraySource, output_location
from test_blockwise import HALO, PARAMS, TILE, _block_model, _image, _write_zarr

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    with dask_executor(workers=2, threads_per_worker=1, memory_limit=None) as executor:
        yield executor


@pytest.fixture(scope="module")
def serial_result(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serial")
    image = _image((300, 300), n=30, seed=7)
    source = ArraySource.open(_write_zarr(folder / "in.zarr", image, (100, 100)))
    segment_blockwise(source, output_location(folder / "out.zarr"), _block_model(tiny_model), tile_shape=TILE,
                      halo=HALO, progress=False)
    return source, zarr.open_array(str(folder / "out.zarr"))[:]


def test_local_cluster_equals_single_process(cluster, serial_result, tiny_model, tmp_path):
    source, expected = serial_result
    assert cluster.workers == 2
    result = segment_blockwise(source, output_location(tmp_path / "dask.zarr"), _block_model(tiny_model),
                               tile_shape=TILE, halo=HALO, executor=cluster, torch_threads=1, progress=False)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "dask.zarr"))[:], expected)
    assert result.n_blocks == 16 and expected.max() > 10


def test_a_worker_killed_mid_run_does_not_change_the_labels(cluster, serial_result, tiny_model, tmp_path):
    source, expected = serial_result
    out = output_location(tmp_path / "killed.zarr")
    scratch = tmp_path / "scratch"
    pids = list(cluster.client.run(os.getpid).values())
    killed = []

    def kill_when_maps_started():
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            try:
                done = zarr.open_array(str(scratch / "maps_done"), mode="r")[:]
            except Exception:
                done = np.zeros(1)
            if 2 <= done.sum() < done.size:  # mid-run: some blocks done, others not
                os.kill(pids[0], signal.SIGKILL)
                killed.append(int(done.sum()))
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_when_maps_started, daemon=True)
    watcher.start()
    segment_blockwise(source, out, _block_model(tiny_model), tile_shape=TILE, halo=HALO, executor=cluster,
                      torch_threads=1, progress=False, scratch=scratch)
    watcher.join(timeout=5)
    assert killed, "the worker was not killed mid-run (the run finished first)"
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "killed.zarr"))[:], expected)


def test_unreachable_scheduler_is_one_clear_error():
    with pytest.raises(InputError, match="cannot reach the dask scheduler at tcp://127.0.0.1:9"):
        with dask_executor(scheduler="tcp://127.0.0.1:9", timeout=2):
            pass


def _add(item, value):
    return item + value


def test_a_shared_value_lost_with_the_workers_is_scattered_again():
    """Scattered data cannot be recomputed: when the workers holding it die (here: all of them,
    by a restart), the next tasks that need it would be cancelled; the executor sends it again."""
    with dask_executor(workers=1, threads_per_worker=1, memory_limit=None) as executor:
        value = executor.share(40)
        assert executor.map(_add, [1, 2], desc="before", progress=False, value=value) == [41, 42]
        executor.client.restart()
        assert value.status != "finished"  # the cluster lost it
        assert executor.map(_add, [1, 2], desc="after", progress=False, value=value) == [41, 42]
