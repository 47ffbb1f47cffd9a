"""CLI subcommands of the hub: ``samzoo models | info | fetch | cache``.

Wiring (in samzoo/cli.py)::

    from samzoo.hub.cli import register
    sub = parser.add_subparsers(dest="command")
    register(sub)
    ...
    args = parser.parse_args(argv)
    return args.func(args)   # each handler returns an exit code; SamzooError -> one line, exit 2
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .. import cli_options as opts
from ..registry.registry import MODALITIES


def register(subparsers: Any) -> None:
    """Add ``models``, ``info``, ``fetch`` and ``cache`` to an argparse subparsers object."""
    p = subparsers.add_parser("models", help="list the models samzoo knows by name",
                              description="List registry models (shipped + --registry/SAMZOO_REGISTRY).")
    p.add_argument("--modality", choices=MODALITIES, help="only models of this imaging modality")
    p.add_argument("--json", action="store_true", help="print JSON")
    opts.add_offline(p)
    opts.add_registry(p)
    p.set_defaults(func=cmd_models)

    p = subparsers.add_parser("info", help="show what a model ID is and where its files come from",
                              description="Describe a model ID (registry ID/alias, bioimage.io ID, hf://, "
                                          "DOI, URL, path); never downloads.")
    p.add_argument("model_id", metavar="ID")
    p.add_argument("--json", action="store_true", help="print JSON")
    opts.add_offline(p)
    opts.add_registry(p)
    p.set_defaults(func=cmd_info)

    p = subparsers.add_parser("fetch", help="download a model into the cache and print its local path",
                              description="Download (or find in the cache) the files of a model, verify "
                                          "their hashes, and print the main local path.")
    p.add_argument("model_id", metavar="ID")
    opts.add_offline(p)
    p.add_argument("--refresh", action="store_true",
                   help="look up mutable references again (hf:// branches, unversioned bioimage.io IDs)")
    p.add_argument("--all", dest="all_files", action="store_true",
                   help="print every file as ROLE<Tab>PATH (checkpoint, decoder, package)")
    opts.add_quiet(p)
    opts.add_registry(p)
    p.set_defaults(func=cmd_fetch)

    p = subparsers.add_parser("cache", help="list or clear downloaded models",
                              description="List (default) or clear the samzoo cache: downloaded models and cached "
                                          "image embeddings (SAMZOO_CACHE_DIR or the platform cache dir).")
    p.add_argument("action", nargs="?", choices=("list", "clear"), default="list")
    p.add_argument("model_ids", nargs="*", metavar="ID",
                   help="clear: only these models, or 'embeddings' for the cached image embeddings (default: all)")
    p.add_argument("--json", action="store_true", help="list: print JSON")
    opts.add_registry(p)
    p.set_defaults(func=cmd_cache)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def cmd_models(args: argparse.Namespace) -> int:
    from .fetch import list_models

    entries = list_models(args.modality, registry=args.registry, offline=args.offline)
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=1))
        return 0
    rows = [("ID", "FAMILY", "ARCH", "MODALITY", "ALIASES", "DESCRIPTION")]
    for e in entries:
        rows.append((e.id, e.family, e.architecture, e.modality, ",".join(e.aliases) or "-", e.description))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5])
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .fetch import model_info

    info = model_info(args.model_id, registry=args.registry, offline=args.offline)
    if args.json:
        print(json.dumps(info, indent=1, default=str))
        return 0
    keys = ["id", "kind", "aliases", "family", "problem", "architecture", "modality", "description", "citation", "model_card",
            "licence", "registry", "location", "cache_folder"]
    for key in keys:
        if key in info and info[key] not in (None, "", [], {}):
            value = info[key]
            if key == "citation":
                value = f"https://doi.org/{value}"
            print(f"{key + ':':14}{', '.join(value) if isinstance(value, list) else value}")
    if info.get("redistributable") is False:
        print(f"{'redistribute:':14}no (do not mirror or publish these weights)")
    for f in info.get("files") or []:
        line = f"{f['role']}: {f['url']}"
        if f.get("member"):
            line += f" -> {f['member']}"
        if f.get("hash"):
            line += f"  ({f['hash']})"
        elif f.get("unhashed"):
            line += f"  (no hash: {f['unhashed']})"
        print(f"{'file:':14}{line}")
        if f.get("gated"):
            gated = f["gated"]
            print(f"{'access:':14}gated: token from ${gated['token_env']}"
                  + (f" (get one at {gated['signup']})" if gated.get("signup") else ""))
    local = info.get("local")
    if local:
        for role, path in local.items():
            print(f"{'local:':14}{role}: {path}")
    else:
        print(f"{'local:':14}not in the cache (`samzoo fetch {args.model_id}`)")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from .fetch import fetch_files, main_file

    files = fetch_files(args.model_id, offline=args.offline, registry=args.registry,
                        progress=not args.quiet, refresh=args.refresh)
    if args.all_files:
        for role, path in files.items():
            print(f"{role}\t{path}")
    else:
        print(main_file(files))
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from ..cache import cache_dir
    from .fetch import cache_clear, cache_list

    if args.action == "clear":
        removed = cache_clear(args.model_ids or None, registry=args.registry)
        for path in removed:
            print(f"removed {path}")
        if not removed:
            print("nothing to remove")
        return 0
    if args.model_ids:
        from ..errors import InputError

        raise InputError("`samzoo cache list` takes no IDs (did you mean `samzoo cache clear ID`?)")
    items = cache_list()
    if args.json:
        print(json.dumps({"cache_dir": str(cache_dir()), "models": [i.to_dict() for i in items]}, indent=1))
        return 0
    print(f"cache: {cache_dir()}")
    for item in items:
        print(f"{item.kind:12}{item.id}  {_human(item.size)}  {item.path}")
    if not items:
        print("(empty)")
    return 0
