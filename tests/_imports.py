"""What a self-contained architecture file imports, with its one guarded optional import set apart."""

from __future__ import annotations

import ast

GUARDED = "_scikit_image_watershed"  # optional scikit-image fast path; falls back when it does not import


def import_roots(tree: ast.AST) -> set:
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports: the file is loaded on its own"
            roots.add((node.module or "").split(".")[0])
    return roots


def unguarded_import_roots(source: str) -> set:
    """Top-level modules the file imports outside :data:`GUARDED`, which may import only skimage."""
    tree = ast.parse(source)
    guarded = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == GUARDED]
    for node in guarded:
        assert import_roots(node) == {"skimage"}, import_roots(node)
    tree.body = [node for node in tree.body if node not in guarded]
    return import_roots(tree)
