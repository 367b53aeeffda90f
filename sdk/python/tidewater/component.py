"""The glue between componentize-py's bindings and the SDK.

Import ``WitWorld`` from here into your app module: componentize-py looks
for it there. Natively (unit tests) ``WitWorld`` is ``None``.
"""

from __future__ import annotations

import tidewater as _tw

try:
    import componentize_py_types as _cpt
    import wit_world
    from wit_world.imports import types as _t
except ImportError:  # natively (unit tests): there is nothing to export
    wit_world = None

if wit_world is None:
    WitWorld = None
else:
    _ERRORS = {
        "transient": _t.ProcessError_Transient,
        "invalid": _t.ProcessError_Invalid,
        "fatal": _t.ProcessError_Fatal,
    }

    class WitWorld(wit_world.WitWorld):
        """The exports of the ``processor`` world, calling the decorated functions."""

        def init(self, config: list[tuple[str, str]]) -> None:
            refusal = _tw.call_init(config)
            if refusal is not None:
                raise _cpt.Err(refusal)

        def process(self, events: list[_t.Event]) -> list:
            fn = _tw._registered.get("process")
            if fn is None:
                raise RuntimeError("no function is decorated with @tidewater.processor")
            Ok, Err, WitOutput, Event = _cpt.Ok, _cpt.Err, _t.Output, _tw.Event
            results = []
            for e in events:
                event = Event(
                    e.topic,
                    e.value,
                    partition=e.partition,
                    offset=e.offset,
                    timestamp_ms=e.timestamp_ms,
                    key=e.key,
                    headers=e.headers,
                )
                try:
                    outputs = fn(event)
                except _tw.ProcessError as err:
                    results.append(Err(_ERRORS[err.kind](err.message)))
                    continue
                results.append(
                    Ok(
                        [
                            WitOutput(o.topic, o.key_bytes(), o.value_bytes(), o.headers_bytes())
                            for o in outputs
                        ]
                    )
                )
            return results
