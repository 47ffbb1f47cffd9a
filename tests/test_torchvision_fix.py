"""The torchvision fix: makes a broken install import, and leaves a healthy one alone."""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from samzoo._torchvision_fix import nms_reference


def run_python(code: str, **env_extra: str) -> str:
    import os

    env = {**os.environ, **env_extra}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_nms_reference_keeps_highest_scoring_of_overlapping_boxes():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.0]])
    scores = torch.tensor([0.5, 0.9, 0.3, 0.1])
    assert nms_reference(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms_reference(boxes, scores, 0.99).tolist() == [1, 0, 2]
    assert nms_reference(torch.zeros((0, 4)), torch.zeros(0), 0.5).tolist() == []


def test_samzoo_makes_torchvision_and_segment_anything_import():
    out = run_python("""
        import samzoo, torch
        from samzoo import _torchvision_fix as fix
        import torchvision, segment_anything, torch_em
        from samzoo._torchvision_fix import nms_reference
        g = torch.Generator().manual_seed(0)
        xy = torch.rand(200, 2, generator=g) * 100
        boxes = torch.cat([xy, xy + 5 + torch.rand(200, 2, generator=g) * 30], 1)
        scores = torch.rand(200, generator=g)
        same = torchvision.ops.nms(boxes, scores, 0.4).tolist() == nms_reference(boxes, scores, 0.4).tolist()
        print(fix.STATUS, same)
    """)
    status, same = out.split()
    assert status in ("patched", "healthy")
    assert same == "True"


def test_fix_is_inert_when_the_extension_loads(tmp_path: Path):
    # A stand-in torchvision whose _C extension is a loadable shared library: a healthy install.
    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    loadable = next(Path(torch.__file__).parent.joinpath("lib").glob("libc10.so*"))
    shutil.copy(loadable, fake / "_C.so")
    # Load the module on its own: importing the samzoo package would import the stand-in.
    import samzoo._torchvision_fix as module

    out = run_python(f"""
        import importlib.util, torch
        spec = importlib.util.spec_from_file_location("fix", {module.__file__!r})
        fix = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(fix)
        print(fix.ensure_torchvision_importable(), fix._LIBRARY is None, hasattr(torch.ops.torchvision, "nms"))
    """, PYTHONPATH=str(tmp_path))
    assert out.splitlines()[-1] == "healthy True False"


def test_fix_does_nothing_once_torchvision_is_imported():
    out = run_python("""
        import samzoo, torchvision
        from samzoo import _torchvision_fix as fix
        before = fix._LIBRARY
        print(fix.ensure_torchvision_importable(), fix._LIBRARY is before)
    """)
    assert out.splitlines()[-1] == "already-imported True"
