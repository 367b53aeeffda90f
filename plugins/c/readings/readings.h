/*
 * The sensor-reading model shared by the C processors: the C port of
 * plugins/rust/readings (its crate docs are the rule).
 *
 * - json_parse_object reads one JSON object strictly (RFC 8259, as serde_json
 *   does): members in order, numbers correctly rounded (strtod), invalid
 *   UTF-8, lone surrogate escapes and numbers too large for a double refused.
 * - put_number writes a double as ECMAScript's Number::toString does.
 * - put_string writes a JSON string as serde_json does.
 */
#ifndef READINGS_H
#define READINGS_H

#include <stdbool.h>
#include <stddef.h>

#include "tidewater.h"

typedef enum { J_NULL, J_BOOL, J_NUMBER, J_STRING, J_ARRAY, J_OBJECT } json_kind;

/** A member of a parsed object. Strings are decoded UTF-8 (not NUL-terminated). */
typedef struct json_member {
  char *key;
  size_t key_len;
  json_kind kind;
  double number; /* J_NUMBER */
  char *str;     /* J_STRING */
  size_t str_len;
  struct json_object *object; /* J_OBJECT: its members (only kept one level down) */
} json_member;

typedef struct json_object {
  json_member *members;
  size_t len;
} json_object;

typedef enum { PARSE_OK, PARSE_NOT_JSON, PARSE_NOT_OBJECT } parse_result;

/** Parses `text` as JSON; on PARSE_OK `*out` holds the top-level object
 * (nested objects one level deep: `measurements`). Free with json_free. */
parse_result json_parse_object(const char *text, size_t len, json_object *out);
void json_free(json_object *o);
/** The last member called `key` (repeated keys: the last wins), or NULL. */
const json_member *json_get(const json_object *o, const char *key);

/** Appends `x` in the canonical number form (or `null` when `finite` is false or x is not finite). */
void put_number(tw_buf *b, bool present, double x);
/** Appends `s` as a JSON string. */
void put_string(tw_buf *b, const char *s, size_t len);
/** A number written as text (readings::parse_number_text); false when it is not one. */
bool parse_number_text(const char *s, size_t len, double *out);
/** The Rust `str::parse::<f64>` grammar without trimming, finite only. */
bool parse_f64_strict(const char *s, size_t len, double *out);
/** Byte order of two strings (memcmp, shorter first on a tie). */
int bytes_cmp(const char *a, size_t al, const char *b, size_t bl);

#endif
