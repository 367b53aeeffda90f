// {{name}}: upper-cases each value and counts the events it has seen.
import { Invalid, defineProcessor, log, state, utf8, type Event, type Output } from "./tidewater.js";

function onEvent(event: Event): Output[] {
  const text = event.value === null ? null : utf8.decode(event.value);
  if (text === null) throw new Invalid("value is a tombstone or not UTF-8");
  const before = state.get("seen");
  const seen = (before === null ? 0 : Number(utf8.decode(before))) + 1;
  state.set("seen", utf8.encode(String(seen)));
  log.info(`event ${seen}`);
  return [{ key: event.key, value: text.toUpperCase(), headers: [["seen", String(seen)]] }];
}

export const { init, process } = defineProcessor({ process: onEvent });
