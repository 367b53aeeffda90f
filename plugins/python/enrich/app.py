"""``enrich`` in Python: the port of ``plugins/rust/enrich`` (its crate docs
are the specification). Build: ``make plugins`` (componentize-py)."""

from __future__ import annotations

from typing import Optional

import tidewater
from readings import Enriched, NotJson, parse_json, parse_number_text
from tidewater import Config, ConfigError, Event, Invalid, Output

BUILT_IN_FIELDS = {
    "temperature (celsius)": "temperature_c",
    "Water flow [l/s]": "flow_l_s",
    "glucose": "glucose_mg_dl",
    "isig": "isig_na",
}

_fields: dict[str, str] = {}
_kinds: dict[str, str] = {}


@tidewater.init
def init(config: Config) -> None:
    """Reads ``field.<column>`` and ``kind.<device>``; refuses other keys."""
    for key, value in config:
        if key.startswith("field."):
            table, name = _fields, key[len("field."):]
        elif key.startswith("kind."):
            table, name = _kinds, key[len("kind."):]
        else:
            raise ConfigError(
                f'unknown config key "{key}" (expected field.<column> or kind.<device>)'
            )
        if not name or not value:
            raise ConfigError(f'config key "{key}" needs a name and a value')
        table[name] = value


def kind_of(measurements: dict[str, Optional[float]]) -> str:
    """The kind of device that reports ``measurements`` (first rule wins)."""
    if "flow_l_s" in measurements:
        return "flowmeter"
    if "glucose_mg_dl" in measurements:
        return "glucose-monitor"
    if "co2_ppm" in measurements or "humidity_pct" in measurements or "light_lux" in measurements:
        return "room-sensor"
    if "temperature_c" in measurements:
        return "thermometer"
    return "unknown"


def _number(v: object) -> Optional[float]:
    if isinstance(v, float):
        return v
    if isinstance(v, str):
        return parse_number_text(v)
    return None


def _sort_key(s: str) -> bytes:
    return s.encode("utf-8")


@tidewater.processor
def process(event: Event) -> list[Output]:
    """Enriches one reading."""
    if event.value is None:
        raise Invalid("tombstone: a reading needs a value")
    try:
        fields = parse_json(event.value)
    except NotJson:
        raise Invalid("value is not JSON") from None
    if not isinstance(fields, dict):
        raise Invalid("value is not a JSON object")
    device = fields.get("device")
    if not isinstance(device, str):
        raise Invalid('field "device" is missing or not a string')
    ts = fields.get("ts")
    if not isinstance(ts, str):
        raise Invalid('field "ts" is missing or not a string')

    measurements: dict[str, Optional[float]] = {}
    for column in sorted(fields):
        if column == "device" or column == "ts":
            continue
        name = _fields.get(column) or BUILT_IN_FIELDS.get(column, column)
        measurements[name] = _number(fields[column])
    if all(v is None for v in measurements.values()):
        raise Invalid(f"reading from {device} at {ts} has no measurement that parses")
    if "temperature_c" in measurements:
        c = measurements["temperature_c"]
        measurements["temperature_f"] = None if c is None else c * 9.0 / 5.0 + 32.0
    if "flow_l_s" in measurements:
        f = measurements["flow_l_s"]
        measurements["flow_m3_h"] = None if f is None else f * 3.6
    kind = _kinds.get(device) or kind_of(measurements)
    enriched = Enriched(device, ts, kind, measurements)
    return [Output(enriched.to_json(), key=device)]


from tidewater.component import WitWorld  # noqa: E402,F401 - the export componentize-py looks for
