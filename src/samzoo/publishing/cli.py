"""``samzoo publish`` and ``samzoo card``: wired into the main CLI with ``register(subparsers)``.

Each subcommand sets ``func`` (``args.func(args) -> int``). User errors are ``SamzooError``s, which
the main CLI prints on one line (exit 2); ``main(argv)`` here does the same for standalone use
(``python -m samzoo.publishing.cli ...``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import PublishError, SamzooError

PUBLISH_HELP = """\
publish a packaged model to Zenodo (a DOI) or a Hugging Face repository (a version tag).

  samzoo publish model.zip --to zenodo --checkpoint model.pt --card card.yaml
  samzoo publish model-v2.zip --to zenodo --new-version-of 10.5281/zenodo.123
  samzoo publish model.zip --to hf ORG/REPO --checkpoint model.pt --card card.yaml

Zenodo: token from ZENODO_TOKEN (scopes deposit:write, deposit:actions), server from
SAMZOO_ZENODO_URL (default https://zenodo.org; --sandbox: https://sandbox.zenodo.org). An
interrupted upload continues when the same command runs again (state in .samzoo-publish.json
next to the first package). Hugging Face: token from HF_TOKEN (write), endpoint from HF_ENDPOINT.
--dry-run prints the files (size, sha256) and metadata as JSON without any network access.
"""


def register(subparsers: Any) -> None:
    """Add the ``publish`` and ``card`` subcommands to an argparse subparsers object."""
    p = subparsers.add_parser(
        "publish",
        help="publish a packaged model to Zenodo or Hugging Face",
        description=PUBLISH_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("packages", nargs="*", metavar="PACKAGE", help="BioImage.IO package zip(s)")
    p.add_argument(
        "--to",
        nargs="+",
        required=True,
        metavar="TARGET",
        help="'zenodo', or 'hf ORG/REPO' for a Hugging Face model repository",
    )
    p.add_argument("--checkpoint", metavar="CKPT", help="samzoo checkpoint to publish with the package(s)")
    p.add_argument(
        "--card",
        metavar="CARD",
        help="model card YAML (see model_cards/); default: samzoo_card.yaml inside the first package",
    )
    p.add_argument("--new-version-of", metavar="DOI", help="Zenodo: publish as a new version of this record")
    p.add_argument("--sandbox", action="store_true", help="Zenodo: use https://sandbox.zenodo.org")
    p.add_argument("--private", action="store_true", help="Hugging Face: create the repository as private")
    p.add_argument("--dry-run", action="store_true", help="print what would be uploaded; no network access")
    p.add_argument("--licence-allows-publishing", action="store_true",
                   help="confirm that the weights' licence lets you publish them publicly (needed for packages "
                        "marked not redistributable, e.g. CellSAM's non-commercial weights)")
    p.add_argument("--new-draft", action="store_true",
                   help="Zenodo: start a new draft although an earlier run was interrupted while creating one "
                        "(after deleting that draft on Zenodo)")
    p.set_defaults(func=run_publish)

    c = subparsers.add_parser("card", help="check and render model cards")
    csub = c.add_subparsers(dest="card_command", metavar="{render,check}")
    csub.required = True
    r = csub.add_parser(
        "render", help="write the README (Markdown) for a model card", description="write the README for a model card"
    )
    r.add_argument("card", metavar="CARD", help="model card YAML")
    r.add_argument("-o", "--output", metavar="README.md", help="output file (default: print); the cover is copied next to it")
    r.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    r.add_argument(
        "--front-matter", action="store_true", help="start with the Hugging Face YAML header (license, tags, ...)"
    )
    r.set_defaults(func=run_card_render)
    k = csub.add_parser("check", help="validate model cards", description="validate model cards")
    k.add_argument("cards", nargs="+", metavar="CARD")
    k.set_defaults(func=run_card_check)


def _parse_target(values: list[str]) -> tuple[str, str | None, list[str]]:
    """(target, repository, packages that followed --to): ``--to zenodo pkg.zip`` and
    ``--to hf ORG/REPO pkg.zip`` work as well as packages before --to."""
    target = values[0].lower()
    if target == "zenodo":
        return "zenodo", None, list(values[1:])
    if target in ("hf", "huggingface", "hugging-face"):
        if len(values) < 2 or values[1].lower().endswith(".zip"):
            raise PublishError("--to hf needs the repository: --to hf ORG/REPO")
        return "hf", values[1], list(values[2:])
    raise PublishError(f"unknown publishing target {values[0]!r}: use --to zenodo or --to hf ORG/REPO")


def run_publish(args: argparse.Namespace) -> int:
    target, repo, more = _parse_target(args.to)
    args.packages = list(args.packages) + more
    if not args.packages:
        raise PublishError("no package given: samzoo publish PACKAGE.zip --to zenodo (or --to hf ORG/REPO)")
    if target == "zenodo":
        if args.private:
            raise PublishError("--private is for Hugging Face; Zenodo records are public")
        from .zenodo import publish_zenodo

        result = publish_zenodo(
            args.packages,
            card=args.card,
            checkpoint=args.checkpoint,
            new_version_of=args.new_version_of,
            sandbox=args.sandbox,
            dry_run=args.dry_run,
            licence_allows_publishing=args.licence_allows_publishing,
            new_draft=args.new_draft,
        )
    else:
        if args.new_version_of or args.sandbox:
            raise PublishError("--new-version-of and --sandbox are for Zenodo; on Hugging Face a new card version is a new tag")
        from .huggingface import publish_hf

        assert repo is not None
        result = publish_hf(
            args.packages,
            repo_id=repo,
            card=args.card,
            checkpoint=args.checkpoint,
            private=args.private,
            dry_run=args.dry_run,
            licence_allows_publishing=args.licence_allows_publishing,
        )
    if isinstance(result, dict):
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        for line in result.lines():
            print(line)
    sys.stdout.flush()
    return 0


def run_card_render(args: argparse.Namespace) -> int:
    from .card import load_card, render_card, write_readme
    from .huggingface import hf_front_matter

    if args.output:
        from ..outputs import check_output_file

        check_output_file(args.output, "--output", inputs=(args.card,), overwrite=args.overwrite)
    card = load_card(args.card)
    kwargs: dict[str, Any] = {}
    if args.front_matter:
        kwargs["front_matter"] = hf_front_matter(card)
    if args.output:
        written = write_readme(card, args.output, **kwargs)
        for path in written:
            print(f"wrote {path}")
    else:
        sys.stdout.write(render_card(card, **kwargs))
    return 0


def run_card_check(args: argparse.Namespace) -> int:
    from .card import load_card

    failures = []
    for path in args.cards:
        try:
            card = load_card(path)
            print(f"{path}: ok ({card.id} {card.version})")
        except SamzooError as exc:
            failures.append(str(exc))
    if failures:
        raise SamzooError(" | ".join(failures))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="samzoo")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SamzooError as exc:
        print(f"samzoo: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
