/* {{name}}: upper-cases each value and counts the events it has seen. */
#include <stdio.h>
#include <stdlib.h>

#include "tidewater.h"

static tw_status process(const tw_event *event, tw_outputs *out) {
  tw_bytes value;
  if (!tw_event_value(event, &value)) return tw_invalid("value is a tombstone");
  tw_buf seen_text = {0};
  unsigned long long seen = 0;
  if (tw_state_get("seen", 4, &seen_text)) {
    tw_buf_putc(&seen_text, 0);
    seen = strtoull((const char *)seen_text.ptr, NULL, 10);
  }
  tw_buf_free(&seen_text);
  seen++;
  char count[24];
  int n = snprintf(count, sizeof count, "%llu", seen);
  tw_state_set("seen", 4, count, (size_t)n);
  tw_log(TW_INFO, "event %llu", seen);

  tw_buf upper = {0};
  for (size_t i = 0; i < value.len; i++) {
    uint8_t c = value.ptr[i];
    tw_buf_putc(&upper, (char)(c >= 'a' && c <= 'z' ? c - 32 : c));
  }
  tw_bytes key;
  bool has_key = tw_event_key(event, &key);
  tw_emit_buf(out, has_key ? key.ptr : NULL, has_key ? key.len : 0, &upper); /* takes `upper` */
  tw_output_header(out, "seen", count, (size_t)n);
  return TW_OK;
}

TIDEWATER_PROCESSOR(process)
