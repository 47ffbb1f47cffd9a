"""What every clean-consumer runner checks first (run with the consumer env's python; this file sits
beside the runners, so it imports without samzoo)."""

from __future__ import annotations

from pathlib import Path


def prepare_output(out: str) -> Path:
    """The output folder, created; exits if samzoo is importable (the packages must not need it)."""
    try:
        import samzoo  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("samzoo is importable in the consumer environment")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
