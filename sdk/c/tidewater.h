/*
 * tidewater.h: write tidewater stream processors in C.
 *
 * A processor is one function called once per event:
 *
 *     #include "tidewater.h"
 *
 *     static tw_status process(const tw_event *event, tw_outputs *out) {
 *         tw_bytes value;
 *         if (!tw_event_value(event, &value))
 *             return tw_invalid("tombstone: %s", "a value is needed");
 *         tw_emit(out, NULL, 0, value.ptr, value.len);   // copied: `value` stays borrowed
 *         return TW_OK;
 *     }
 *     TIDEWATER_PROCESSOR(process)
 *
 * The SDK receives each batch from the host (the tidewater:processor@0.1.0
 * WIT world), calls your function for each event in order and returns one
 * result per event: the outputs emitted, or the error returned.
 *
 * Ownership, in three rules:
 *   1. Everything the SDK hands you (tw_bytes from events, config, state
 *      lookups into a tw_buf you own) is borrowed for the duration of the
 *      call, except a tw_buf you filled, which is yours: tw_buf_free it.
 *   2. Everything you hand the SDK is copied (tw_emit, tw_output_header,
 *      tw_state_set, messages), so your buffers stay yours...
 *   3. ...except tw_emit_buf, which takes the tw_buf's bytes without a copy
 *      and leaves the tw_buf empty (safe to reuse or to tw_buf_free).
 * When an event's function returns an error, the outputs it emitted are
 * dropped.
 *
 * Build (make plugins does this): clang-16 --target=wasm32-wasi
 * -mexec-model=reactor with tidewater.c and the generated bindings, then
 * `wasm-tools component new --adapt` with the WASI preview1 reactor adapter.
 */
#ifndef TIDEWATER_H
#define TIDEWATER_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A borrowed byte string: valid until the call that produced it returns. */
typedef struct tw_bytes {
  const uint8_t *ptr;
  size_t len;
} tw_bytes;

/** A growable byte buffer that you own; zero-initialise it (`tw_buf b = {0};`). */
typedef struct tw_buf {
  uint8_t *ptr;
  size_t len;
  size_t cap;
} tw_buf;

/** Appends `len` bytes. Aborts (a trap) when memory runs out. */
void tw_buf_put(tw_buf *b, const void *bytes, size_t len);
/** Appends a NUL-terminated string (without the NUL). */
void tw_buf_puts(tw_buf *b, const char *s);
/** Appends one byte. */
void tw_buf_putc(tw_buf *b, char c);
/** Appends printf-style text. */
void tw_buf_printf(tw_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Frees the bytes and leaves the buffer empty and reusable. */
void tw_buf_free(tw_buf *b);

/** What processing one event came to. */
typedef enum tw_status {
  TW_OK = 0,        /**< the outputs emitted are published */
  TW_TRANSIENT = 1, /**< a passing failure: the host retries the event with backoff */
  TW_INVALID = 2,   /**< the event is bad: the host dead-letters it */
  TW_FATAL = 3,     /**< the processor cannot go on: the host stops it */
} tw_status;

/** Records the message of a transient error and returns TW_TRANSIENT. */
tw_status tw_transient(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/** Records the message of an invalid-event error and returns TW_INVALID. */
tw_status tw_invalid(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/** Records the message of a fatal error and returns TW_FATAL. */
tw_status tw_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/** One record read from an input topic (opaque; read it with the functions below). */
typedef struct tidewater_processor_types_event_t tw_event;

tw_bytes tw_event_topic(const tw_event *e);
uint32_t tw_event_partition(const tw_event *e);
uint64_t tw_event_offset(const tw_event *e);
/** Milliseconds since the Unix epoch (UTC). */
int64_t tw_event_timestamp_ms(const tw_event *e);
/** The key into `*out`; false when the record has no key. */
bool tw_event_key(const tw_event *e, tw_bytes *out);
/** The value into `*out`; false for a tombstone (an empty value is true, len 0). */
bool tw_event_value(const tw_event *e, tw_bytes *out);
/** The number of headers (names may repeat; order is kept). */
size_t tw_event_header_count(const tw_event *e);
/** Header `i`: its name (UTF-8) and value (any bytes). */
void tw_event_header_at(const tw_event *e, size_t i, tw_bytes *name, tw_bytes *value);
/** The value of the first header called `name`; false when there is none. */
bool tw_event_header(const tw_event *e, const char *name, tw_bytes *value);

/** Where an event's outputs go (opaque). */
typedef struct tw_outputs tw_outputs;

/** Emits an output to the default topic. `key` NULL means no key. Both are copied. */
void tw_emit(tw_outputs *out, const void *key, size_t key_len, const void *value, size_t value_len);
/** Emits an output whose value is `value`'s bytes, taken without a copy; `value` is left empty. */
void tw_emit_buf(tw_outputs *out, const void *key, size_t key_len, tw_buf *value);
/** Emits a tombstone (no value) for `key`. */
void tw_emit_tombstone(tw_outputs *out, const void *key, size_t key_len);
/** Sends the last emitted output to `topic` instead of the default (copied). */
void tw_output_topic(tw_outputs *out, const char *topic);
/** Appends a header to the last emitted output (both copied). */
void tw_output_header(tw_outputs *out, const char *name, const void *value, size_t value_len);

/** The processor's config: the `config` table of its TOML section (opaque). */
typedef struct tw_config tw_config;

size_t tw_config_count(const tw_config *c);
/** Entry `i`: key and value (UTF-8, not NUL-terminated). */
void tw_config_at(const tw_config *c, size_t i, tw_bytes *key, tw_bytes *value);
/** The value of `key`; false when it is not set. */
bool tw_config_get(const tw_config *c, const char *key, tw_bytes *value);
/** Records why the config is refused; returns nonzero (return it from init). */
int tw_refuse(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/** The value stored under `key`, appended to `*out` (which you own); false when absent. */
bool tw_state_get(const void *key, size_t key_len, tw_buf *out);
/** Stores `value` under `key` (both copied). Committed with the batch's outputs. */
void tw_state_set(const void *key, size_t key_len, const void *value, size_t value_len);
/** Removes `key`; removing a missing key does nothing. */
void tw_state_delete(const void *key, size_t key_len);

/** Log levels, lowest first. */
typedef enum tw_level { TW_TRACE, TW_DEBUG, TW_INFO, TW_WARN, TW_ERROR } tw_level;
/** Writes a printf-style line into the host's log (rate-limited by the host). */
void tw_log(tw_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** The functions the SDK calls; define them with the macros below. */
tw_status tidewater_process_event(const tw_event *event, tw_outputs *out);
int tidewater_init_config(const tw_config *config);

/** Exports `fn(const tw_event *, tw_outputs *) -> tw_status` as the processor. */
#define TIDEWATER_PROCESSOR(fn) \
  tw_status tidewater_process_event(const tw_event *event, tw_outputs *out) { return fn(event, out); }
/** Exports `fn(const tw_config *) -> int` (0: accepted; else return tw_refuse(...)) as init. */
#define TIDEWATER_INIT(fn) \
  int tidewater_init_config(const tw_config *config) { return fn(config); }

#ifdef __cplusplus
}
#endif
#endif
