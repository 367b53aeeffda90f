"""Write tidewater stream processors in Python.

A processor is one function called once per event::

    import tidewater
    from tidewater import Event, Output, Invalid

    @tidewater.processor
    def process(event: Event) -> list[Output]:
        text = event.value_str()
        if text is None:
            raise Invalid("value is not UTF-8")
        return [Output(text.upper(), key=event.key)]

    from tidewater.component import WitWorld  # the export componentize-py looks for

The SDK receives the batches from the host (the ``tidewater:processor@0.1.0``
WIT world), calls your function for each event in order and returns one
result per event: the outputs it returned, or the error it raised
(:class:`Transient`, :class:`Invalid` or :class:`Fatal`). Any other exception
traps the component, like a panic in Rust: the host discards the instance,
finds the event that caused it and dead-letters it.

An optional ``@tidewater.init`` function receives the processor's config and
may refuse it by raising :class:`ConfigError` (or ``ValueError``).

Outside the component (plain ``python -m unittest``), :mod:`tidewater.state`
is an in-memory dict and :mod:`tidewater.log` writes to stderr, so the same
code runs in unit tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Union

from . import log, state

__all__ = [
    "Config",
    "ConfigError",
    "Event",
    "Fatal",
    "Invalid",
    "Output",
    "ProcessError",
    "Transient",
    "init",
    "log",
    "process_batch",
    "processor",
    "state",
]

Header = tuple[str, bytes]


class Event:
    """One record read from an input topic.

    ``value`` is ``None`` for a tombstone, distinct from ``b""``. Header
    values are bytes (not necessarily UTF-8); names may repeat, order is kept.
    """

    __slots__ = ("topic", "partition", "offset", "timestamp_ms", "key", "value", "headers")

    def __init__(
        self,
        topic: str,
        value: Optional[bytes],
        *,
        partition: int = 0,
        offset: int = 0,
        timestamp_ms: int = 0,
        key: Optional[bytes] = None,
        headers: Optional[list[Header]] = None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.timestamp_ms = timestamp_ms
        self.key = key
        self.value = value
        self.headers = headers if headers is not None else []

    def value_str(self) -> Optional[str]:
        """The value as UTF-8 text; ``None`` for a tombstone or bytes that are not UTF-8."""
        if self.value is None:
            return None
        try:
            return self.value.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def header(self, name: str) -> Optional[bytes]:
        """The value of the first header called ``name``, if any."""
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def __repr__(self) -> str:
        return (
            f"Event(topic={self.topic!r}, partition={self.partition}, offset={self.offset}, "
            f"key={self.key!r}, value={self.value!r}, headers={self.headers!r})"
        )


@dataclass
class Output:
    """One record to publish.

    ``value``, ``key`` and header values may be ``str`` (written as UTF-8)
    or ``bytes``; a ``None`` value is a tombstone. ``topic=None`` sends it to the processor's configured output.
    The host stamps it with the input's timestamp and an ``idempotency-key``
    header.
    """

    value: Union[bytes, str, None]
    key: Union[bytes, str, None] = None
    topic: Optional[str] = None
    headers: list[tuple[str, Union[bytes, str]]] = field(default_factory=list)

    def value_bytes(self) -> Optional[bytes]:
        """The value as bytes (``str`` encoded as UTF-8)."""
        return _as_bytes(self.value)

    def key_bytes(self) -> Optional[bytes]:
        """The key as bytes (``str`` encoded as UTF-8)."""
        return _as_bytes(self.key)

    def headers_bytes(self) -> list[Header]:
        """The headers with ``str`` values encoded as UTF-8."""
        return [(n, v.encode("utf-8") if isinstance(v, str) else bytes(v)) for n, v in self.headers]


def _as_bytes(b: Union[bytes, str, None]) -> Optional[bytes]:
    if b is None or isinstance(b, bytes):
        return b
    return b.encode("utf-8")


class ProcessError(Exception):
    """Why one event could not be processed. Raise a subclass."""

    kind = "invalid"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Transient(ProcessError):
    """A passing failure: the host retries the event with backoff."""

    kind = "transient"


class Invalid(ProcessError):
    """The event is bad: the host dead-letters it."""

    kind = "invalid"


class Fatal(ProcessError):
    """The processor cannot go on: the host stops it (others go on)."""

    kind = "fatal"


class ConfigError(Exception):
    """Raised by an ``init`` function to refuse the configuration."""


class Config:
    """The processor's config: the ``config`` table of its section in the
    host's TOML file, every value a string, in the order given."""

    def __init__(self, entries: list[tuple[str, str]]) -> None:
        self._entries = list(entries)

    def get(self, key: str, default: Optional[str] = None) -> Optional[str]:
        """The value of ``key``, or ``default``."""
        for k, v in self._entries:
            if k == key:
                return v
        return default

    def items(self) -> list[tuple[str, str]]:
        """Every entry, in order."""
        return list(self._entries)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


ProcessFn = Callable[[Event], list[Output]]
InitFn = Callable[[Config], None]

_registered: dict[str, Callable] = {}


def processor(fn: ProcessFn) -> ProcessFn:
    """Decorator: ``fn(event) -> list[Output]`` is called once per event."""
    _registered["process"] = fn
    return fn


def init(fn: InitFn) -> InitFn:
    """Decorator: ``fn(config)`` is called once per instance before any batch;
    raising :class:`ConfigError` or ``ValueError`` refuses the config."""
    _registered["init"] = fn
    return fn


def call_init(entries: list[tuple[str, str]]) -> Optional[str]:
    """Runs the registered init; returns the refusal message, or ``None``."""
    fn = _registered.get("init")
    if fn is None:
        return None
    try:
        fn(Config(entries))
    except (ConfigError, ValueError) as e:
        return str(e)
    return None


def process_batch(events: list[Event]) -> list[Union[list[Output], ProcessError]]:
    """Runs the registered processor over ``events``: per event, its outputs
    or the :class:`ProcessError` it raised. Other exceptions propagate."""
    fn = _registered.get("process")
    if fn is None:
        raise RuntimeError("no function is decorated with @tidewater.processor")
    results: list[Union[list[Output], ProcessError]] = []
    for event in events:
        try:
            results.append(list(fn(event)))
        except ProcessError as e:
            results.append(e)
    return results
