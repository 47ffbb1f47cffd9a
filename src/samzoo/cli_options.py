"""The options every command spells the same way (one concept, one flag), and old spellings.

Contract across the CLI: the model is ``-m/--model ID`` (default: the shipped model), the output is
``-o/--output``, and ``--overwrite``, ``--quiet``, ``--device``, ``--offline``, ``--registry``,
``--tile-shape/--halo`` mean the same wherever they appear. Old spellings keep working for one
release through :class:`DeprecatedAlias`, which prints a one-line note naming the new flag.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

_warned: set[str] = set()


def deprecation_note(old: str, new: str) -> None:
    """One line on stderr (once per process and spelling): ``old`` still works, ``new`` is the name."""
    if old in _warned:
        return
    _warned.add(old)
    print(f"samzoo: note: {old} is deprecated and will be removed in the next release; use {new}", file=sys.stderr)


class DeprecatedAlias(argparse.Action):
    """Stores like ``store`` into ``dest`` but notes the deprecation when the old spelling is used."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        deprecation_note(option_string or self.option_strings[0], self.new)
        setattr(namespace, self.dest, values)


def add_model(p: argparse.ArgumentParser, help_extra: str = "") -> None:
    p.add_argument("-m", "--model", default=None, metavar="ID",
                   help="model ID, checkpoint or BioImage.IO package (default: the shipped default model)"
                        + help_extra)


def add_output(p: argparse.ArgumentParser, help_text: str, *, required: bool = False, old: str | None = None,
               default: str | None = None) -> None:
    p.add_argument("-o", "--output", required=required, default=default, help=help_text)
    if old:
        p.add_argument(old, dest="output", action=DeprecatedAlias, new="-o/--output", help=argparse.SUPPRESS)


def add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never an input)")


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                   help="where the model runs (default auto: the GPU when there is one, else the CPU)")


def add_tiling(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tile-shape", default=None, metavar="N|H,W",
                   help="tile the image (default: automatic for images larger than the model input)")
    p.add_argument("--halo", default=None, metavar="N|H,W", help="context around each tile in pixels")


def add_offline(p: argparse.ArgumentParser) -> None:
    p.add_argument("--offline", action="store_true", default=None,
                   help="never use the network (also SAMZOO_OFFLINE=1)")


def add_registry(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", action="append", metavar="R", default=None,
                   help="extra registry (YAML path or URL); repeatable; also SAMZOO_REGISTRY "
                        "(os.pathsep-separated)")
