/* threshold in C: the port of plugins/rust/threshold (its crate docs are the
 * specification). Built by `make plugins`. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "readings.h"
#include "tidewater.h"

typedef struct {
  char *measurement;
  size_t len;
  bool has_min, has_max, has_delta;
  double min, max, delta;
} rule_t;

static rule_t *rules;
static size_t n_rules;

enum { BELOW = 0, WITHIN = 1, ABOVE = 2 };

static rule_t *rule_for(const char *m, size_t len, bool create) {
  for (size_t i = 0; i < n_rules; i++)
    if (rules[i].len == len && memcmp(rules[i].measurement, m, len) == 0) return &rules[i];
  if (!create) return NULL;
  rules = realloc(rules, (n_rules + 1) * sizeof *rules);
  if (!rules) abort();
  rule_t *r = &rules[n_rules++];
  memset(r, 0, sizeof *r);
  r->measurement = malloc(len + 1);
  if (!r->measurement) abort();
  memcpy(r->measurement, m, len);
  r->measurement[len] = 0;
  r->len = len;
  return r;
}

static int by_measurement(const void *a, const void *b) {
  const rule_t *x = a, *y = b;
  return bytes_cmp(x->measurement, x->len, y->measurement, y->len);
}

static int init(const tw_config *config) {
  for (size_t i = 0; i < tw_config_count(config); i++) {
    tw_bytes k, v;
    tw_config_at(config, i, &k, &v);
    const char *key = (const char *)k.ptr;
    int kl = (int)k.len;
    size_t dot = k.len;
    while (dot > 0 && key[dot - 1] != '.') dot--;
    if (dot == 0)
      return tw_refuse("unknown config key \"%.*s\" (expected <measurement>.min, .max or .delta)", kl, key);
    double x;
    if (!parse_f64_strict((const char *)v.ptr, v.len, &x))
      return tw_refuse("config %.*s = \"%.*s\" is not a number", kl, key, (int)v.len, (const char *)v.ptr);
    rule_t *r = rule_for(key, dot - 1, true);
    const char *what = key + dot;
    size_t wl = k.len - dot;
    if (wl == 3 && memcmp(what, "min", 3) == 0) r->has_min = true, r->min = x;
    else if (wl == 3 && memcmp(what, "max", 3) == 0) r->has_max = true, r->max = x;
    else if (wl == 5 && memcmp(what, "delta", 5) == 0) {
      if (!(x > 0))
        return tw_refuse("config %.*s = \"%.*s\" must be above 0", kl, key, (int)v.len, (const char *)v.ptr);
      r->has_delta = true, r->delta = x;
    } else
      return tw_refuse("unknown config key \"%.*s\" (expected <measurement>.min, .max or .delta)", kl, key);
  }
  qsort(rules, n_rules, sizeof *rules, by_measurement);
  for (size_t i = 0; i < n_rules; i++) {
    rule_t *r = &rules[i];
    if (r->has_min && r->has_max && r->min > r->max) {
      tw_buf lo = {0}, hi = {0};
      put_number(&lo, true, r->min);
      put_number(&hi, true, r->max);
      int res = tw_refuse("%s.min (%.*s) is above %s.max (%.*s)", r->measurement, (int)lo.len, (const char *)lo.ptr,
                          r->measurement, (int)hi.len, (const char *)hi.ptr);
      tw_buf_free(&lo);
      tw_buf_free(&hi);
      return res;
    }
  }
  return 0;
}

typedef struct {
  uint64_t count;
  double last, min, max;
  uint8_t zone;
} track_t;

static void encode(const track_t *t, uint8_t out[33]) {
  memcpy(out, &t->count, 8); /* wasm32 is little-endian */
  memcpy(out + 8, &t->last, 8);
  memcpy(out + 16, &t->min, 8);
  memcpy(out + 24, &t->max, 8);
  out[32] = t->zone;
}

static bool decode(const tw_buf *b, track_t *t) {
  if (b->len < 33 || b->ptr[32] > 2) return false;
  memcpy(&t->count, b->ptr, 8);
  memcpy(&t->last, b->ptr + 8, 8);
  memcpy(&t->min, b->ptr + 16, 8);
  memcpy(&t->max, b->ptr + 24, 8);
  t->zone = b->ptr[32];
  return true;
}

static void alert(tw_outputs *out, const json_member *device, const json_member *ts, const json_member *m,
                  const char *kind, double value, double limit, bool has_previous, double previous) {
  tw_buf b = {0};
  tw_buf_puts(&b, "{\"device\":");
  put_string(&b, device->str, device->str_len);
  tw_buf_puts(&b, ",\"ts\":");
  put_string(&b, ts->str, ts->str_len);
  tw_buf_puts(&b, ",\"measurement\":");
  put_string(&b, m->key, m->key_len);
  tw_buf_puts(&b, ",\"alert\":");
  put_string(&b, kind, strlen(kind));
  tw_buf_puts(&b, ",\"value\":");
  put_number(&b, true, value);
  tw_buf_puts(&b, ",\"limit\":");
  put_number(&b, true, limit);
  tw_buf_puts(&b, ",\"previous\":");
  put_number(&b, has_previous, previous);
  tw_buf_putc(&b, '}');
  tw_emit_buf(out, device->str, device->str_len, &b);
}

static int by_key(const void *a, const void *b) {
  const json_member *x = *(const json_member *const *)a, *y = *(const json_member *const *)b;
  return bytes_cmp(x->key, x->key_len, y->key, y->key_len);
}

static tw_status watch(const json_object *obj, tw_outputs *out) {
  const json_member *ms = json_get(obj, "measurements");
  if (!ms || ms->kind != J_OBJECT) return tw_invalid("field \"measurements\" is missing or not an object");
  const json_member *device = json_get(obj, "device"), *ts = json_get(obj, "ts"), *kind = json_get(obj, "kind");
  if (!device || device->kind != J_STRING) return tw_invalid("field \"device\" is missing or not a string");
  if (!ts || ts->kind != J_STRING) return tw_invalid("field \"ts\" is missing or not a string");
  if (!kind || kind->kind != J_STRING) return tw_invalid("field \"kind\" is missing or not a string");

  const json_object *m = ms->object;
  const json_member **sorted = malloc((m->len + 1) * sizeof *sorted);
  if (!sorted) abort();
  size_t n = 0;
  for (size_t i = 0; i < m->len; i++) {
    bool later = false;
    for (size_t j = i + 1; j < m->len && !later; j++)
      later = m->members[j].key_len == m->members[i].key_len &&
              memcmp(m->members[j].key, m->members[i].key, m->members[i].key_len) == 0;
    if (!later) sorted[n++] = &m->members[i];
  }
  qsort(sorted, n, sizeof *sorted, by_key);
  tw_buf key = {0}, raw = {0};
  for (size_t i = 0; i < n; i++) {
    const json_member *e = sorted[i];
    if (e->kind != J_NUMBER) continue;
    double x = e->number;
    rule_t none = {0}, *r = rule_for(e->key, e->key_len, false);
    if (!r) r = &none;
    key.len = 0;
    tw_buf_put(&key, device->str, device->str_len);
    tw_buf_putc(&key, '/');
    tw_buf_put(&key, e->key, e->key_len);
    raw.len = 0;
    track_t before;
    bool has_before = tw_state_get(key.ptr, key.len, &raw) && decode(&raw, &before);
    uint8_t now = (r->has_min && x < r->min) ? BELOW : (r->has_max && x > r->max) ? ABOVE : WITHIN;
    uint8_t was = has_before ? before.zone : WITHIN;
    double previous = has_before ? before.last : 0;
    if (now != was) {
      const char *what;
      bool has_limit;
      double limit;
      if (now == BELOW) what = "below-min", has_limit = r->has_min, limit = r->min;
      else if (now == ABOVE) what = "above-max", has_limit = r->has_max, limit = r->max;
      else if (was == BELOW) what = "back-in-range", has_limit = r->has_min, limit = r->min;
      else what = "back-in-range", has_limit = r->has_max, limit = r->max;
      if (has_limit) alert(out, device, ts, e, what, x, limit, has_before, previous);
    }
    if (r->has_delta && has_before && fabs(x - previous) > r->delta)
      alert(out, device, ts, e, "jump", x, r->delta, true, previous);
    track_t t = has_before ? (track_t){before.count + 1, x, fmin(before.min, x), fmax(before.max, x), now}
                           : (track_t){1, x, x, x, now};
    uint8_t enc[33];
    encode(&t, enc);
    tw_state_set(key.ptr, key.len, enc, sizeof enc);
  }
  tw_buf_free(&key);
  tw_buf_free(&raw);
  free(sorted);
  return TW_OK;
}

static tw_status process(const tw_event *event, tw_outputs *out) {
  tw_bytes value;
  if (!tw_event_value(event, &value)) return tw_invalid("tombstone: a reading needs a value");
  json_object obj;
  parse_result p = json_parse_object((const char *)value.ptr, value.len, &obj);
  if (p == PARSE_NOT_JSON) return tw_invalid("value is not JSON");
  if (p == PARSE_NOT_OBJECT) return tw_invalid("field \"measurements\" is missing or not an object");
  tw_status s = watch(&obj, out);
  json_free(&obj);
  return s;
}

TIDEWATER_PROCESSOR(process)
TIDEWATER_INIT(init)
