"""The family boundary: shared code reaches a model family only through the registry.

Every module of ``src/samzoo`` outside ``families/`` is parsed (its import statements, at any
depth: top level, inside functions, under ``if``) and must not import ``samzoo.families.<name>``
or anything below it; importing ``samzoo.families`` itself (``get_family``, ``family_of``,
``detect_family``, ``FamilySpec``) is the door. The exemptions are listed with their reason.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "samzoo"

#: folders whose modules are not checked, with the reason
EXEMPT_FOLDERS: dict[str, str] = {}  # packaging/ reaches μSAM through FAMILY.package / FAMILY.load now

#: modules allowed to import exactly these names from a family, with the reason
ALLOWED_NAMES = {
    "samzoo/__init__.py": (
        "the public API keeps μSAM's documented names (samzoo.SamzooModel, samzoo.Predictor, "
        "samzoo.ModelConfig, samzoo.preset, samzoo.architecture, samzoo.load_checkpoint, samzoo.save_checkpoint); "
        "a re-export for users, not shared machinery",
        {("samzoo.families.microsam.checkpoint", "load_checkpoint"),
         ("samzoo.families.microsam.checkpoint", "save_checkpoint"),
         ("samzoo.families.microsam.config", "ModelConfig"),
         ("samzoo.families.microsam.config", "architecture"),
         ("samzoo.families.microsam.config", "preset"),
         ("samzoo.families.microsam.model", "SamzooModel"),
         ("samzoo.families.microsam.predictor", "Predictor")},
    ),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str, str | None]]:
    """``(line, absolute module, imported name or None)`` for every import statement in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                # ``from samzoo.families import microsam`` imports a family's package itself
                is_family = module == "samzoo.families" and (PACKAGE / "families" / alias.name).is_dir()
                found.append((node.lineno, f"{module}.{alias.name}" if is_family else module, alias.name))
    return found


def family_internal(module: str) -> bool:
    """``samzoo.families.<anything>``: a family's package or a module inside one."""
    return module.startswith("samzoo.families.")


def shared_modules() -> list[Path]:
    paths = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "families" or relative.parts[0] in EXEMPT_FOLDERS:
            continue
        paths.append(path)
    return paths


def violations(path: Path) -> list[str]:
    key = path.relative_to(SRC).as_posix()
    allowed = ALLOWED_NAMES.get(key, ("", set()))[1]
    return [f"{key}:{line} imports {module}" + (f" ({name})" if name else "")
            for line, module, name in imports_of(path)
            if family_internal(module) and (module, name) not in allowed]


def test_shared_code_imports_no_family_internals():
    paths = shared_modules()
    assert len(paths) > 50 and any(p.name == "loop.py" for p in paths)  # the walk really sees the package
    problems = [problem for path in paths for problem in violations(path)]
    assert not problems, "shared code must reach families through samzoo.families only:\n" + "\n".join(problems)


def test_the_checker_catches_every_import_form(tmp_path, monkeypatch):
    """Each way of writing a family import is caught; the registry itself is not."""
    fake = tmp_path / "samzoo" / "evaluation"
    fake.mkdir(parents=True)
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    cases = {
        "from ..families.microsam.model import SamzooModel\n": True,
        "from ..families import microsam\n": True,
        "from samzoo.families.samcell import training\n": True,
        "import samzoo.families.cellsam.model\n": True,
        "def f():\n    from ..families.cellpose_sam.training import train\n": True,
        "from ..families import family_of, get_family\n": False,
        "import samzoo.families\n": False,
        "from .metrics import mean_segmentation_accuracy\n": False,
    }
    for i, (source, bad) in enumerate(cases.items()):
        path = fake / f"case{i}.py"
        path.write_text(source)
        assert bool(violations(path)) is bad, source


@pytest.mark.parametrize("key", sorted(ALLOWED_NAMES))
def test_allowed_names_are_still_needed(key):
    """An allowance that is no longer used is removed, so the list cannot silently grow stale."""
    path = SRC / key
    used = {(module, name) for _, module, name in imports_of(path) if family_internal(module)}
    assert used == ALLOWED_NAMES[key][1]
