"""Turn errors into one line on stderr and an exit code; tracebacks only with ``--debug``.

Exit codes: 0 success, 1 a verification gate failed, 2 usage or input error (including a file
system that refuses a read or write), 3 internal error. Paths inside a command's staging folder
are shown as their destinations.
"""

from __future__ import annotations

import errno
import sys
from typing import Any

import click

from cli.logs import configure_logging
from onnxprune.errors import OnnxpruneError, first_line
from onnxprune.paths import os_error_message, unstage_text

__all__ = ["EXIT_GATE_FAILED", "EXIT_INPUT", "EXIT_INTERNAL", "OneLineErrorGroup"]

EXIT_GATE_FAILED, EXIT_INPUT, EXIT_INTERNAL = 1, 2, 3

# The environment refused a file operation (full disk, permissions, read-only file system, a
# folder where a file should be, a name too long, ...): the user's to fix, exit 2.
FILE_SYSTEM_ERRORS = frozenset(
    {
        errno.EACCES,
        errno.EDQUOT,
        errno.EEXIST,
        errno.EFBIG,
        errno.EIO,
        errno.EISDIR,
        errno.ENAMETOOLONG,
        errno.ENOENT,
        errno.ENOSPC,
        errno.ENOTDIR,
        errno.EPERM,
        errno.EROFS,
        errno.EXDEV,
    }
)


def _fail(message: str, code: int) -> None:
    click.echo(f"onnxprune: error: {message}", err=True)
    sys.exit(code)


def _internal(error: Exception) -> None:
    """A bug: say so in one line, keep the traceback for ``--debug``."""
    detail = unstage_text(first_line(error, ""))
    _fail(
        f"internal error: {type(error).__name__}: {detail} (rerun with --debug for the traceback)",
        EXIT_INTERNAL,
    )


class OneLineErrorGroup(click.Group):
    """A click group whose errors are one line each, unless ``--debug`` is on the command line."""

    def main(self, args: Any = None, *pos: Any, **kwargs: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        debug = "--debug" in argv
        configure_logging(debug)
        kwargs["standalone_mode"] = False
        try:
            code = super().main(argv, *pos, **kwargs)
        except click.exceptions.Abort:
            _fail("aborted", EXIT_INPUT)
        except click.ClickException as error:
            if debug:
                raise
            _fail(error.format_message().replace("\n", " "), EXIT_INPUT)
        except OnnxpruneError as error:
            if debug:
                raise
            for line in getattr(error, "reasons", ()):  # grouped reasons, to stdout
                click.echo(f"  {line}")
            _fail(unstage_text(str(error)).replace("\n", " "), EXIT_INPUT)
        except Exception as error:
            if debug:
                raise
            if isinstance(error, OSError) and error.errno in FILE_SYSTEM_ERRORS:
                _fail(os_error_message(error).replace("\n", " "), EXIT_INPUT)
            _internal(error)
        sys.exit(code or 0)
