"""Run ``bioimageio test`` on package zips inside bioimage.io's shared model runtime.

Why by hand and not in the suite: bioimage.io serves models only on a fixed runtime (torch 2.5.1,
numpy 1.26.4, bioimageio.core 0.10.4 with bioimageio.spec 0.5.10, onnxruntime 1.20.1, no
scikit-image). The torch 2.5.1 wheel with its CUDA libraries is ~5 GB installed, too large for CI.
This script builds that environment once (samzoo is not installed there) and tests each zip in it::

    python benchmarks/shared_runtime_check.py --venv /tmp/bioengine-rt --json out.json A.zip B.zip ...

Packages to test come from ``samzoo package`` (any family). The result per zip: exit status,
seconds, and the checks that failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

RUNTIME = ["torch==2.5.1", "numpy==1.26.4", "bioimageio.core==0.10.4", "onnxruntime==1.20.1", "scipy",
           "pydantic<2.14"]  # the pydantic pin is the one samzoo packages declare


def ensure_runtime(venv: Path) -> dict:
    python = venv / "bin" / "python"
    started = time.perf_counter()
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *RUNTIME], check=True)
    probe = ("import importlib.util as u, torch, numpy, bioimageio.core, bioimageio.spec, onnxruntime, json;"
             "print(json.dumps({'torch': torch.__version__, 'numpy': numpy.__version__,"
             "'bioimageio.core': bioimageio.core.__version__, 'bioimageio.spec': bioimageio.spec.__version__,"
             "'onnxruntime': onnxruntime.__version__,"
             "'absent': [m for m in ('samzoo', 'skimage', 'torchvision', 'cv2') if u.find_spec(m) is None]}))")
    versions = json.loads(subprocess.run([str(python), "-c", probe], check=True, capture_output=True,
                                         text=True).stdout)
    versions["install_or_probe_s"] = round(time.perf_counter() - started, 1)
    return versions


def test_zip(venv: Path, package: Path) -> dict:
    started = time.perf_counter()
    proc = subprocess.run([str(venv / "bin" / "bioimageio"), "test", str(package)], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
    lines = proc.stdout.splitlines()
    failed = [re.sub(r"\s+", " ", line).strip() for line in lines if "❌" in line]
    passed_weights = sorted({m.group(1) for line in lines
                             if "✔" in line and (m := re.search(r"weights\.(\w+)\s+Reproduce", line))})
    return {"zip": package.name, "size_mb": round(package.stat().st_size / 1e6, 1), "returncode": proc.returncode,
            "seconds": round(time.perf_counter() - started, 1), "weights_reproduced": passed_weights,
            "failed_checks": failed[:10]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zips", nargs="+", type=Path)
    parser.add_argument("--venv", type=Path, required=True)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = {"runtime": ensure_runtime(args.venv), "packages": []}
    for package in args.zips:
        report["packages"].append(test_zip(args.venv, package))
        print(json.dumps(report["packages"][-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if all(p["returncode"] == 0 for p in report["packages"]) else 1


if __name__ == "__main__":
    sys.exit(main())
