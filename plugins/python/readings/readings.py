"""The sensor-reading model shared by the Python processors: the Python
port of ``plugins/rust/readings`` (read its crate docs for the rule).

- :func:`parse_json` reads JSON as ``serde_json`` does (strict RFC 8259,
  correctly rounded numbers, no NaN/Infinity, no number too large for a
  double, no lone surrogate escapes).
- :func:`number` writes a double as ECMAScript's ``Number::toString`` does.
- :func:`string` writes a JSON string as ``serde_json`` does.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Optional

__all__ = ["NotJson", "number", "parse_json", "parse_number_text", "string"]


class NotJson(ValueError):
    """The bytes are not JSON."""


def _finite(text: str) -> float:
    x = float(text)
    if math.isinf(x):
        raise NotJson("number out of range")
    return x


def _constant(name: str) -> Any:
    raise NotJson(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_float=_finite, parse_int=_finite, parse_constant=_constant)


def _has_surrogate(v: Any) -> bool:
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(v, dict):
        return any(_has_surrogate(k) or _has_surrogate(x) for k, x in v.items())
    if isinstance(v, list):
        return any(_has_surrogate(x) for x in v)
    return False


def _too_deep(text: str) -> bool:
    """serde_json refuses more than 127 levels of nesting."""
    depth, in_string, escaped = 0, False, False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c == "[" or c == "{":
            depth += 1
            if depth >= 128:
                return True
        elif c == "]" or c == "}":
            depth -= 1
    return False


def parse_json(raw: bytes) -> Any:
    """The JSON value in ``raw``; numbers are floats. Raises :class:`NotJson`."""
    try:
        text = raw.decode("utf-8")
        value = _DECODER.decode(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise NotJson(str(e)) from None
    if len(text) >= 256 and text.count("[") + text.count("{") >= 128 and _too_deep(text):
        raise NotJson("recursion limit exceeded")
    if "\\u" in text and _has_surrogate(value):
        raise NotJson("lone surrogate")
    return value


_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_number_text(s: str) -> Optional[float]:
    """A number written as text (see the Rust ``readings::parse_number_text``)."""
    t = s.strip(" \t\n\x0c\r")
    if not _NUMBER_TEXT.fullmatch(t):
        return None
    x = float(t)
    return x if math.isfinite(x) else None


def number(x: Optional[float]) -> str:
    """``x`` in the canonical form (JavaScript's ``String(x)``), or ``null``."""
    if x is None or not math.isfinite(x):
        return "null"
    if x == 0:
        return "0"
    r = repr(float(x))
    sign = ""
    if r[0] == "-":
        sign, r = "-", r[1:]
    mantissa, _, exp = r.partition("e")
    whole, _, frac = mantissa.partition(".")
    e = int(exp) if exp else 0
    digits = whole + frac
    n = len(whole) + e
    stripped = digits.lstrip("0")
    n -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        s = digits + "0" * (n - k)
    elif 0 < n <= 21:
        s = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        s = "0." + "0" * (-n) + digits
    else:
        m = digits if k == 1 else digits[0] + "." + digits[1:]
        s = m + ("e+" if n > 0 else "e-") + str(abs(n - 1))
    return sign + s


_dumps = json.JSONEncoder(ensure_ascii=False).encode


def string(s: str) -> str:
    """``s`` as a JSON string, escaped as ``serde_json`` escapes it."""
    return _dumps(s)


class Enriched:
    """An enriched reading, as ``enrich`` writes it and ``threshold`` reads it."""

    __slots__ = ("device", "ts", "kind", "measurements")

    def __init__(self, device: str, ts: str, kind: str, measurements: dict[str, Optional[float]]):
        self.device = device
        self.ts = ts
        self.kind = kind
        self.measurements = measurements

    @staticmethod
    def parse(raw: bytes) -> "Enriched":
        """Parses an enriched reading; raises ``ValueError`` naming the field."""
        try:
            v = parse_json(raw)
        except NotJson:
            raise ValueError("value is not JSON") from None
        obj = v if isinstance(v, dict) else {}
        m = obj.get("measurements")
        if not isinstance(m, dict):
            raise ValueError('field "measurements" is missing or not an object')
        measurements = {
            k: (x if isinstance(x, float) else None) for k, x in m.items()
        }

        def field(name: str) -> str:
            f = obj.get(name)
            if not isinstance(f, str):
                raise ValueError(f'field "{name}" is missing or not a string')
            return f

        return Enriched(field("device"), field("ts"), field("kind"), measurements)

    def to_json(self) -> str:
        """The canonical JSON text."""
        parts = [
            '{"device":', string(self.device),
            ',"ts":', string(self.ts),
            ',"kind":', string(self.kind),
            ',"measurements":{',
        ]
        first = True
        for name in sorted(self.measurements):
            if not first:
                parts.append(",")
            first = False
            parts.append(string(name))
            parts.append(":")
            parts.append(number(self.measurements[name]))
        parts.append("}}")
        return "".join(parts)
