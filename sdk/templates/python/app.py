"""``{{name}}``: upper-cases each value and counts the events it has seen."""

import tidewater
from tidewater import Event, Invalid, Output, log, state


@tidewater.processor
def process(event: Event) -> list[Output]:
    text = event.value_str()
    if text is None:
        raise Invalid("value is a tombstone or not UTF-8")
    seen = int(state.get(b"seen") or b"0") + 1
    state.set(b"seen", str(seen).encode())
    log.info(f"event {seen}")
    return [Output(text.upper(), key=event.key, headers=[("seen", str(seen).encode())])]


from tidewater.component import WitWorld  # noqa: E402,F401 - the export componentize-py looks for
