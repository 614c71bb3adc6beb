"""One-line errors: a `KitError` carries a message the user can act on, `run_cli` prints it."""
from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class KitError(Exception):
    """An error the user can act on; printed as one line, never as a traceback."""


def fail(message: str) -> NoReturn:
    raise KitError(message)


def os_error_text(err: OSError, name: object = None) -> str:
    """`<file>: <reason>` for an OSError; `name` replaces the file the error carries (if any)."""
    name = name if name is not None else err.filename
    reason = err.strerror or str(err) or type(err).__name__
    return f"{name}: {reason}" if name is not None else reason


def yaml_error_text(err: Exception) -> str:
    """A PyYAML error in one line: `line L, column C: <problem>`."""
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + (getattr(err, "problem", None) or " ".join(str(err).split()))


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors as KitErrors, so that a wrong command line is one `error:` line
    (with the usage folded into it) like every other error, not argparse's two-line message."""

    def error(self, message: str) -> NoReturn:
        usage = " ".join(self.format_usage().split())
        fail(f"{message} ({usage})")


def run_cli(main) -> None:
    """Run a CLI entry point and turn KitError into a one-line message with exit code 2.

    An OSError that no stage turned into a KitError (a file that cannot be read or written) is
    reported the same way, naming its file: a full disk or a read-only folder is the user's to fix,
    not a bug to show as a traceback."""
    try:
        main()
    except KitError as err:
        message = str(err)
    except OSError as err:
        message = os_error_text(err)
    else:
        return
    print("error: " + " ".join(message.splitlines()), file=sys.stderr)
    sys.exit(2)
