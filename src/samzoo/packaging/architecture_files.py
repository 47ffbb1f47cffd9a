"""One architecture source file for a package, joined from a family's self-contained pieces.

Why: a BioImage.IO ``pytorch_state_dict`` names ONE architecture file (sha256-pinned), while a
family keeps its standalone code in several modules that import each other relatively (so samzoo
runs the very same code in-house). A family names its pieces in order; this joins them, drops the
module-level relative imports between them (the names are defined by the earlier pieces in the
joined file) and the repeated ``from __future__`` lines, and puts one header on top.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path


def _without_relative_imports(text: str, name: str) -> str:
    """``text`` with its module-level relative imports and ``from __future__`` lines blanked
    (line numbers kept); a relative import inside a function or class is an error (it would
    fail in the consumer and cannot be dropped without breaking the code around it)."""
    tree = ast.parse(text, filename=name)
    lines = text.splitlines(keepends=True)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.level or node.module == "__future__"):
            for i in range(node.lineno - 1, node.end_lineno):
                lines[i] = "\n"
    nested = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level and n not in tree.body]
    if nested:
        raise ValueError(f"{name}: relative import(s) inside a function or class at line(s) {nested}; "
                         "a packaged architecture file cannot keep them")
    return "".join(lines)


def join_architecture_files(folder: Path, pieces: Sequence[str], header: str) -> str:
    """``header`` (comment lines), ``from __future__ import annotations``, then each piece (a path
    relative to ``folder``) under a ``# ---- <piece>`` line, without its relative imports."""
    body = []
    for piece in pieces:
        text = (Path(folder) / piece).read_text(encoding="utf-8")
        body.append(f"# ---- {piece}\n{_without_relative_imports(text, piece)}")
    header = header if header.endswith("\n") else header + "\n"
    return header + "from __future__ import annotations\n" + "\n".join(body)
