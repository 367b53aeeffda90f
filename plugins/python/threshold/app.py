"""``threshold`` in Python: the port of ``plugins/rust/threshold`` (its crate
docs are the specification). Build: ``make plugins`` (componentize-py)."""

from __future__ import annotations

import math
import re
import struct
from typing import Optional

import tidewater
from readings import Enriched, number, string
from tidewater import Config, ConfigError, Event, Invalid, Output, state

BELOW, WITHIN, ABOVE = 0, 1, 2
_TRACK = struct.Struct("<QdddB")  # count, last, min, max, zone: 33 bytes

# Rust's `str::parse::<f64>` grammar (no whitespace); "inf"/"nan" are not finite anyway.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

# measurement -> [min, max, delta]
_rules: dict[str, list[Optional[float]]] = {}


def _unknown(key: str) -> ConfigError:
    return ConfigError(f'unknown config key "{key}" (expected <measurement>.min, .max or .delta)')


@tidewater.init
def init(config: Config) -> None:
    """Reads ``<measurement>.min``, ``.max`` and ``.delta``."""
    for key, value in config:
        measurement, dot, what = key.rpartition(".")
        if not dot:
            raise _unknown(key)
        x = float(value) if _NUMBER.fullmatch(value) else math.inf
        if not math.isfinite(x):
            raise ConfigError(f'config {key} = "{value}" is not a number')
        rule = _rules.setdefault(measurement, [None, None, None])
        if what == "min":
            rule[0] = x
        elif what == "max":
            rule[1] = x
        elif what == "delta":
            if not x > 0:
                raise ConfigError(f'config {key} = "{value}" must be above 0')
            rule[2] = x
        else:
            raise _unknown(key)
    for m in sorted(_rules, key=lambda s: s.encode("utf-8")):
        lo, hi, _ = _rules[m]
        if lo is not None and hi is not None and lo > hi:
            raise ConfigError(f"{m}.min ({number(lo)}) is above {m}.max ({number(hi)})")


def _alert(r: Enriched, measurement: str, kind: str, value: float, limit: float,
           previous: Optional[float]) -> Output:
    text = "".join((
        '{"device":', string(r.device),
        ',"ts":', string(r.ts),
        ',"measurement":', string(measurement),
        ',"alert":', string(kind),
        ',"value":', number(value),
        ',"limit":', number(limit),
        ',"previous":', number(previous),
        "}",
    ))
    return Output(text, key=r.device)


_NO_RULE = [None, None, None]


@tidewater.processor
def process(event: Event) -> list[Output]:
    """Updates the device's state and returns its alerts."""
    if event.value is None:
        raise Invalid("tombstone: a reading needs a value")
    try:
        reading = Enriched.parse(event.value)
    except ValueError as e:
        raise Invalid(str(e)) from None
    alerts: list[Output] = []
    for measurement in sorted(reading.measurements):
        x = reading.measurements[measurement]
        if x is None:
            continue
        lo, hi, delta = _rules.get(measurement, _NO_RULE)
        key = f"{reading.device}/{measurement}".encode("utf-8")
        raw = state.get(key)
        before = None
        if raw is not None and len(raw) >= 33 and raw[32] <= 2:
            before = _TRACK.unpack_from(raw)
        if lo is not None and x < lo:
            now = BELOW
        elif hi is not None and x > hi:
            now = ABOVE
        else:
            now = WITHIN
        was = WITHIN if before is None else before[4]
        previous = None if before is None else before[1]
        if now != was:
            if now == BELOW:
                kind, limit = "below-min", lo
            elif now == ABOVE:
                kind, limit = "above-max", hi
            elif was == BELOW:
                kind, limit = "back-in-range", lo
            else:
                kind, limit = "back-in-range", hi
            if limit is not None:
                alerts.append(_alert(reading, measurement, kind, x, limit, previous))
        if delta is not None and previous is not None and abs(x - previous) > delta:
            alerts.append(_alert(reading, measurement, "jump", x, delta, previous))
        if before is None:
            track = (1, x, x, x, now)
        else:
            track = (before[0] + 1, x, min(before[2], x), max(before[3], x), now)
        state.set(key, _TRACK.pack(*track))
    return alerts


from tidewater.component import WitWorld  # noqa: E402,F401 - the export componentize-py looks for
