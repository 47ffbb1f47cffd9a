"""Joining a family's standalone pieces into a package's one architecture file."""

from __future__ import annotations

import pytest

from samzoo.packaging.architecture_files import join_architecture_files


def test_pieces_joined_in_order_without_relative_imports(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("from __future__ import annotations\nimport math\n\nTWO = 2\n")
    (tmp_path / "sub" / "b.py").write_text(
        "from __future__ import annotations\nfrom ..a import TWO\nfrom .c import x\n\nFOUR = TWO * TWO\n")
    source = join_architecture_files(tmp_path, ("a.py", "sub/b.py"), "# generated for a test")
    assert source.startswith("# generated for a test\nfrom __future__ import annotations\n")
    assert source.count("from __future__") == 1
    assert source.index("# ---- a.py") < source.index("# ---- sub/b.py")
    namespace: dict = {}
    exec(compile(source, "joined.py", "exec"), namespace)
    assert namespace["FOUR"] == 4


def test_multi_line_relative_import_removed_nested_one_refused(tmp_path):
    (tmp_path / "a.py").write_text("from .b import (\n    x,\n)\n\nY = 1\n")
    source = join_architecture_files(tmp_path, ("a.py",), "# test")
    assert "import" not in source.split("annotations\n", 1)[1] and "Y = 1" in source
    compile(source, "joined.py", "exec")
    (tmp_path / "c.py").write_text("def f():\n    from .b import x\n    return x\n")
    with pytest.raises(ValueError, match="c.py: relative import.*line\\(s\\) \\[2\\]"):
        join_architecture_files(tmp_path, ("a.py", "c.py"), "# test")
