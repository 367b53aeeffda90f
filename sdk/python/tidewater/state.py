"""Per-processor key-value state kept by the host (the WIT ``state`` interface).

Writes made while processing a batch are committed together with that
batch's outputs and position, or not at all; reads see earlier writes of the
same batch. Outside the component this is an in-memory dict
(:func:`clear` empties it, for unit tests).
"""

from __future__ import annotations

from typing import Optional

try:
    from wit_world.imports import state as _wit
except ImportError:  # natively: unit tests
    _wit = None

_memory: dict[bytes, bytes] = {}


def get(key: bytes) -> Optional[bytes]:
    """The value stored under ``key``, if any."""
    if _wit is not None:
        return _wit.get(key)
    return _memory.get(bytes(key))


def set(key: bytes, value: bytes) -> None:  # noqa: A001 - mirrors the WIT name
    """Stores ``value`` under ``key``."""
    if _wit is not None:
        _wit.set(key, value)
    else:
        _memory[bytes(key)] = bytes(value)


def delete(key: bytes) -> None:
    """Removes ``key``; removing a missing key does nothing."""
    if _wit is not None:
        _wit.delete(key)
    else:
        _memory.pop(bytes(key), None)


def clear() -> None:
    """Empties the in-memory stand-in (unit tests only)."""
    _memory.clear()
