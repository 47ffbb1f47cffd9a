"""Time and peak memory of packaging a vit_b checkpoint, beside micro-sam's ``export_sam_model``.

    python benchmarks/bench_packaging.py [--workdir DIR] [--micro-sam-python PATH] [--keep]

Makes a random-init vit_b samzoo checkpoint (micro-sam-compatible layout, with AIS decoder), then
packages it in a fresh subprocess (so imports, model loading and the one encoder pass are all
counted) and reads the child's peak RSS (``ru_maxrss`` from ``os.wait4``). With
``--micro-sam-python`` (a Python of a separate venv where micro-sam is installed) the same
checkpoint goes through ``micro_sam.bioimageio.export_sam_model`` the same way; without it the
reference numbers measured on this kind of machine are printed (FACTS: 65 s, 3.8 GB).

The random vit_b model's AIS parameters are set so that the watershed keeps everything as
foreground (the package needs a non-empty test output); this changes nothing about the cost.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FACTS_MICRO_SAM = {"seconds": 65.0, "peak_rss_gb": 3.8, "zip_mb": 338.0, "source": "FACTS.md (same machine type)"}
TARGET_TIME_FRACTION = 0.5
TARGET_RSS_GB = 2.5
TORCHVISION_FIX = Path(__file__).resolve().parents[1] / "src" / "samzoo" / "_torchvision_fix.py"


def make_checkpoint(path: Path) -> Path:
    import torch

    import samzoo
    from samzoo import SamzooModel, preset, save_checkpoint

    torch.manual_seed(0)
    model = SamzooModel(
        preset("vit_b"),
        ais_params={"foreground_threshold": 0.01, "center_distance_threshold": 1.0,
                    "boundary_distance_threshold": 1.0},
        metadata={"name": "bench vit_b", "version": "0.0.1", "metrics": {"note": "random weights"}},
    )
    save_checkpoint(model, path)
    assert samzoo
    return path


def sample_image(path: Path) -> Path:
    import numpy as np

    from samzoo.packaging.samples import synthetic_sample

    image, labels = synthetic_sample(512, seed=0)
    np.save(path, image)
    np.save(path.with_name("sample_labels.npy"), labels)
    return path


CHILD_SAMZOO = r"""
import sys, time, json, logging
t0 = time.perf_counter()
logging.basicConfig(level=logging.WARNING, format="  %(message)s")
logging.getLogger("samzoo.families.microsam.packaging.export").setLevel(logging.DEBUG)
import samzoo
from samzoo.packaging import package_model
t_import = time.perf_counter()
out = package_model(sys.argv[1], sys.argv[2], sample_image=sys.argv[3])
t1 = time.perf_counter()
print(json.dumps({"call_s": t1 - t_import, "import_s": t_import - t0,
                  "zips": {k: str(v) for k, v in out.items()}}))
"""

CHILD_MICRO_SAM = r"""
import sys, time, json
t0 = time.perf_counter()
import importlib.util  # samzoo's torchvision fix (by file path), before micro_sam imports torchvision
spec = importlib.util.spec_from_file_location("_samzoo_tv_fix", sys.argv[4])
fix = importlib.util.module_from_spec(spec); spec.loader.exec_module(fix); fix.ensure_torchvision_importable()
import numpy as np
from micro_sam.bioimageio import export_sam_model
t_import = time.perf_counter()
image = np.load(sys.argv[3]); labels = np.load(sys.argv[3].replace("sample.npy", "sample_labels.npy"))
export_sam_model(image, labels, model_type="vit_b", name="bench-vit-b", output_path=sys.argv[2] + "/micro_sam.zip",
                 checkpoint_path=sys.argv[1])
t1 = time.perf_counter()
print(json.dumps({"call_s": t1 - t_import, "import_s": t_import - t0, "zips": {"micro_sam": sys.argv[2] + "/micro_sam.zip"}}))
"""


def run_child(python: str, code: str, args: list[str], env: dict[str, str]) -> dict:
    start = time.perf_counter()
    proc = subprocess.Popen([python, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}):\n{err[-4000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["phases"] = [line.strip() for line in err.splitlines() if "peak RSS" in line]
    for line in result["phases"]:
        print("   ", line)
    result["process_wall_s"] = wall
    result["peak_rss_gb"] = usage.ru_maxrss * 1024 / 1e9  # Linux: kilobytes
    result["cpu_s"] = usage.ru_utime + usage.ru_stime
    result["zip_mb"] = {k: Path(v).stat().st_size / 1e6 for k, v in result["zips"].items()}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--micro-sam-python", default=None, help="python of a venv with micro-sam installed")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-packaging-"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "vit_b_random.pt"
    if not ckpt.exists():
        print("making a random vit_b checkpoint ...", flush=True)
        make_checkpoint(ckpt)
    sample = work / "sample.npy"
    if not sample.exists():
        sample_image(sample)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}

    results = {}
    out = work / "samzoo_out"
    out.mkdir(exist_ok=True)
    print("samzoo package_model (vit_b, all packages) ...", flush=True)
    results["samzoo"] = run_child(sys.executable, CHILD_SAMZOO, [str(ckpt), str(out), str(sample)], env)
    if args.micro_sam_python:
        out_m = work / "micro_sam_out"
        out_m.mkdir(exist_ok=True)
        print("micro-sam export_sam_model (vit_b) ...", flush=True)
        results["micro_sam"] = run_child(args.micro_sam_python, CHILD_MICRO_SAM,
                                       [str(ckpt), str(out_m), str(sample), str(TORCHVISION_FIX)], env)
    else:
        results["micro_sam"] = dict(FACTS_MICRO_SAM)

    s, m = results["samzoo"], results["micro_sam"]
    m_time = m.get("call_s", m.get("seconds"))
    print()
    print(f"{'':28}{'samzoo':>12}{'micro-sam':>12}")
    print(f"{'packaging call (s)':28}{s['call_s']:>12.1f}{m_time:>12.1f}")
    print(f"{'process wall incl. import (s)':28}{s['process_wall_s']:>12.1f}{m.get('process_wall_s', float('nan')):>12.1f}")
    print(f"{'peak RSS (GB)':28}{s['peak_rss_gb']:>12.2f}{m['peak_rss_gb']:>12.2f}")
    print(f"{'zips (MB)':28}{json.dumps({k: round(v) for k, v in s['zip_mb'].items()}):>12}  "
          f"{m.get('zip_mb', '')}")
    print(f"micro-sam numbers from: {m.get('source', 'measured here')}")
    ok_time = s["call_s"] <= TARGET_TIME_FRACTION * m_time
    ok_rss = s["peak_rss_gb"] < TARGET_RSS_GB
    print(f"target time <= {TARGET_TIME_FRACTION:.0%} of micro-sam: {'met' if ok_time else 'MISSED'}; "
          f"peak RSS < {TARGET_RSS_GB} GB: {'met' if ok_rss else 'MISSED'}")
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print(f"results: {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
