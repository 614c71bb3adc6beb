"""One-line errors: a `KitError` carries a message the user can act on, `run_cli` prints it."""
from __future__ import annotations

import sys


class KitError(Exception):
    """An error the user can act on; printed as one line, never as a traceback."""


def fail(message: str) -> None:
    raise KitError(message)


def run_cli(main) -> None:
    """Run a CLI entry point and turn KitError into a one-line message with exit code 2."""
    try:
        main()
    except KitError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
