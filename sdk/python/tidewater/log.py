"""Levelled logging into the host's log (the WIT ``log`` interface), tagged
with the processor's name and rate-limited by the host. Outside the
component, lines go to stderr."""

from __future__ import annotations

import sys

try:
    from wit_world.imports import log as _wit
except ImportError:  # natively: unit tests
    _wit = None

_LEVELS = ("trace", "debug", "info", "warn", "error")


def _log(level: int, message: str) -> None:
    if _wit is not None:
        _wit.log(_wit.Level(level), message)
    else:
        print(f"[{_LEVELS[level]}] {message}", file=sys.stderr)


def trace(message: str) -> None:
    """Writes ``message`` at trace level."""
    _log(0, message)


def debug(message: str) -> None:
    """Writes ``message`` at debug level."""
    _log(1, message)


def info(message: str) -> None:
    """Writes ``message`` at info level."""
    _log(2, message)


def warn(message: str) -> None:
    """Writes ``message`` at warn level."""
    _log(3, message)


def error(message: str) -> None:
    """Writes ``message`` at error level."""
    _log(4, message)
