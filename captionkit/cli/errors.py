"""One place where every command's failures become a one-line message and a non-zero exit, not a traceback.

The ``captionkit`` group uses :class:`CaptionkitGroup`: an exception escaping any subcommand is printed as
``Error: <message>`` on stderr with exit status 1; running out of memory is the machine's limit, not a bug, and says
what was being allocated when the code that ran out named it. ``captionkit --debug ...`` (or ``CAPTIONKIT_DEBUG=1``)
lets the exception through with its traceback instead.
"""
import os
import sys

import click

__all__ = ["CaptionkitGroup", "DEBUG_ENV"]

DEBUG_ENV = "CAPTIONKIT_DEBUG"
_META_KEY = "captionkit.debug"

# What bad input, bad files and failed runs raise; anything else is a bug in captionkit and is reported as such.
_EXPECTED = (ValueError, OSError, FloatingPointError, RuntimeError, ImportError)


class _CommandFailed(click.ClickException):
    def __init__(self, exc):
        message = str(exc) or type(exc).__name__
        if isinstance(exc, MemoryError):
            # captionkit's own allocations for users' data (pictures, features) name themselves in the message.
            detail = str(exc) or "the allocation that failed did not say what it was for"
            message = f"out of memory: {detail}"
        elif not isinstance(exc, _EXPECTED):
            message = (f"unexpected {type(exc).__name__}: {message} (this is a bug in captionkit; rerun with "
                       "`captionkit --debug ...` and report the traceback)")
        super().__init__(message)


def _remember_debug(ctx, param, value):
    ctx.meta[_META_KEY] = value or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    return value


class CaptionkitGroup(click.Group):
    """A click group with a ``--debug`` option that turns exceptions from subcommands into clean errors."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params.append(click.Option(
            ["--debug"], is_flag=True, expose_value=False, is_eager=True, callback=_remember_debug,
            help=f"Show the full traceback when a command fails (also: {DEBUG_ENV}=1).",
        ))

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # The reader of our output went away (`captionkit sample RUN | head`): what it wanted it has, so stop
            # quietly. stdout is pointed at /dev/null so that flushing it at exit cannot fail a second time.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(0)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if ctx.meta.get(_META_KEY):
                raise
            raise _CommandFailed(exc) from exc
