"""Blockwise segmentation of large arrays: time and peak memory against the array size.

Builds a synthetic uint8 image or volume (bright disks, chunk by chunk, never whole in memory)
in a zarr store, then segments it in a child process with ``segment_blockwise`` and reports wall
time, blocks per second and the child's peak RSS (``ru_maxrss``; with ``--workers`` the peak
RSS of every dask worker and of the driver is sampled). The model is a random-init μSAM of a
small configuration (``--img-size``, 2 ViT blocks): the point is the memory bound and the
blockwise machinery, not the network's speed (see bench_inference.py for that).

    python benchmarks/bench_blockwise.py --shape 20000 20000 --out benchmarks/results/blockwise_20k.json
    python benchmarks/bench_blockwise.py --shape 8 4096 4096 --volume --out ...
    python benchmarks/bench_blockwise.py --shape 4096 4096 --workers 2 --out ...
    python benchmarks/bench_blockwise.py --shape 20000 20000 --max-minutes 10 --out ...

The parent samples the child's RSS (and its children's, psutil, every second) into a timeline.
``--max-minutes`` stops the child after that long: for arrays whose full run does not fit the
time available, the result then says how many blocks' maps were done (the scratch store's
``maps_done``), the maps rate, and the peak RSS so far -- a partial run, reported as such.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def make_input(path: Path, shape: tuple[int, ...], chunk: int) -> None:
    """Disks of radius 10 on a grid with noise, written chunk by chunk (deterministic)."""
    import zarr

    spatial = shape[-2:]
    chunks = ((1,) if len(shape) == 3 else ()) + (chunk, chunk)
    array = zarr.create_array(str(path), shape=shape, chunks=chunks, dtype="uint8", overwrite=True)
    rng = np.random.default_rng(0)
    for plane in range(shape[0] if len(shape) == 3 else 1):
        for y in range(0, spatial[0], chunk):
            for x in range(0, spatial[1], chunk):
                h, w = min(chunk, spatial[0] - y), min(chunk, spatial[1] - x)
                rows, cols = np.ogrid[y: y + h, x: x + w]
                dy, dx = (rows + 3 * plane) % 40 - 20, (cols + 2 * plane) % 40 - 20
                block = np.where(dy ** 2 + dx ** 2 <= 100, 200, 30).astype(np.float32)
                block += rng.normal(0, 5, block.shape)
                index = ((plane,) if len(shape) == 3 else ()) + (slice(y, y + h), slice(x, x + w))
                array[index] = np.clip(block, 0, 255).astype(np.uint8)


def child(args: argparse.Namespace) -> dict:
    import torch

    import samzoo
    from samzoo import SamzooModel
    from samzoo.families import family_of
    from samzoo.families.microsam.config import ModelConfig
    from samzoo.segmentation.blockwise import SerialExecutor, segment_blockwise
    from samzoo.stores import ArraySource, output_location

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = ModelConfig(name="bench", img_size=args.img_size, patch_size=16, embed_dim=64, depth=2, num_heads=2,
                         global_attn_indexes=(1,), window_size=8, prompt_embed_dim=64, mask_decoder_depth=1,
                         mask_decoder_mlp_dim=128, mask_decoder_heads=2, iou_head_hidden_dim=64, ais_decoder=True,
                         ais_initial_features=8, normalization="minmax")
    model = SamzooModel(config)
    params = {"center_distance_threshold": 0.6, "boundary_distance_threshold": 0.6}
    block_model = family_of(model).block_model(model, params)
    source = ArraySource.open(args.input)
    output = output_location(args.output)
    start = time.perf_counter()
    kwargs = dict(is_volume=args.volume, progress=False, overwrite=True, torch_threads=args.threads)
    if args.workers:
        from samzoo.segmentation.distributed import dask_executor

        with dask_executor(workers=args.workers, threads_per_worker=args.threads) as executor:
            peaks = _sample_worker_memory(executor.client)
            t0 = time.perf_counter()
            result = segment_blockwise(source, output, block_model, executor=executor, **kwargs)
            seconds = time.perf_counter() - t0
            peaks.stop()
            worker_peak = peaks.peak
    else:
        t0 = time.perf_counter()
        result = segment_blockwise(source, output, block_model, executor=SerialExecutor(), **kwargs)
        seconds = time.perf_counter() - t0
        worker_peak = None
    return {
        "shape": list(source.shape), "volume": args.volume, "img_size": args.img_size, "workers": args.workers or 0,
        "threads": args.threads, "blocks": result.n_blocks, "objects": result.n_objects,
        "seconds": round(seconds, 1), "seconds_with_setup": round(time.perf_counter() - start, 1),
        "blocks_per_second": round(result.n_blocks / seconds, 3), "pass_seconds": result.timings,
        "peak_rss_driver_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpu_seconds_driver": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 1),
        "peak_rss_per_worker_mb": worker_peak, "input_mb": round(float(np.prod(source.shape)) / 2 ** 20, 1),
        "labels_in_memory_mb": round(float(np.prod(source.shape)) * 4 / 2 ** 20, 1),
        "maps_in_memory_mb": round(float(np.prod(source.shape)) * 12 / 2 ** 20, 1),
        "samzoo": samzoo.__version__,
    }


class _sample_worker_memory:
    """Peak RSS (MB) of each dask worker, sampled every 0.5 s from a thread."""

    def __init__(self, client) -> None:
        self.client, self.peak, self._stop = client, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                rss = self.client.run(lambda: psutil.Process().memory_info().rss / 2 ** 20)
                for worker, value in rss.items():
                    self.peak[worker] = round(max(self.peak.get(worker, 0.0), value), 1)
            except Exception:
                pass
            self._stop.wait(0.5)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


CPU_SECONDS: list[float] = [0.0]  # the child's (and its children's) CPU time at the last sample


def _watch(proc: subprocess.Popen, max_minutes: float | None) -> tuple[list[tuple[float, float]], bool]:
    """RSS (MB) of ``proc`` and its children every second until it ends or ``max_minutes`` pass;
    their CPU time goes to ``CPU_SECONDS`` (on a shared machine the CPU time measures the work)."""
    import psutil

    start, timeline, stopped = time.perf_counter(), [], False
    parent = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            procs = [parent, *parent.children(recursive=True)]
            rss = sum(p.memory_info().rss for p in procs) / 2 ** 20
            CPU_SECONDS[0] = sum(sum(p.cpu_times()[:2]) for p in procs)
            timeline.append((round(time.perf_counter() - start, 1), round(rss, 1)))
        except psutil.Error:
            pass
        if max_minutes and time.perf_counter() - start > 60 * max_minutes:
            proc.kill()
            proc.wait()
            stopped = True
            break
        time.sleep(1.0)
    return timeline, stopped


def _partial_result(workdir: Path, args: argparse.Namespace, wall: float) -> dict:
    """What a stopped run did: blocks whose maps are in the scratch store (the maps pass resumes)."""
    import zarr

    path = workdir / "labels.zarr.samzoo-scratch" / "maps_done"
    if path.exists():
        done = zarr.open_array(str(path), mode="r")
        n_done, n_blocks = int(np.asarray(done[:]).sum()), int(done.shape[0])
    else:  # stopped before the scratch store existed
        n_done, n_blocks = 0, None
    return {"shape": args.shape, "volume": args.volume, "img_size": args.img_size, "threads": args.threads,
            "partial": True, "stopped_after_seconds": round(wall, 1), "blocks": n_blocks,
            "blocks_with_maps_done": n_done, "maps_blocks_per_second_incl_setup": round(n_done / wall, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs="+", required=True)
    parser.add_argument("--volume", action="store_true")
    parser.add_argument("--img-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--max-minutes", type=float, default=None, help="stop the run after this long (partial)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="samzoo-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "input.zarr"
    t0 = time.perf_counter()
    make_input(source, tuple(args.shape), 1024)
    made = time.perf_counter() - t0
    command = [sys.executable, __file__, "--child", "--input", str(source), "--output", str(workdir / "labels.zarr"),
               "--shape", *map(str, args.shape), "--img-size", str(args.img_size), "--threads", str(args.threads),
               "--workers", str(args.workers)] + (["--volume"] if args.volume else [])
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, text=True, env=env)
        timeline, stopped = _watch(proc, args.max_minutes)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    wall = time.perf_counter() - started
    if stopped:
        result = _partial_result(workdir, args, wall)
    else:
        if proc.returncode:
            sys.exit(stderr[-3000:])
        result = json.loads(stdout.strip().splitlines()[-1])
    result["child_cpu_seconds_sampled"] = round(CPU_SECONDS[0], 1)
    result["peak_rss_sampled_mb"] = max((m for _, m in timeline), default=None)
    result["rss_timeline_mb"] = timeline[:: max(1, len(timeline) // 60)]
    result["input_generation_seconds"] = round(made, 1)
    result["load_average"] = os.getloadavg()
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
