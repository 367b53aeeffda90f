/* enrich in C: the port of plugins/rust/enrich (its crate docs are the
 * specification). Built by `make plugins`. */
#include <stdlib.h>
#include <string.h>

#include "readings.h"
#include "tidewater.h"

typedef struct {
  char *from, *to;
  size_t from_len;
} rename_t;

static rename_t *fields, *kinds;
static size_t n_fields, n_kinds;

static const char *BUILT_IN[][2] = {
    {"temperature (celsius)", "temperature_c"},
    {"Water flow [l/s]", "flow_l_s"},
    {"glucose", "glucose_mg_dl"},
    {"isig", "isig_na"},
};

static char *dup_n(const uint8_t *p, size_t n) {
  char *s = malloc(n + 1);
  if (!s) abort();
  memcpy(s, p, n);
  s[n] = 0;
  return s;
}

static void add(rename_t **list, size_t *n, const uint8_t *from, size_t from_len, tw_bytes to) {
  /* a later entry for the same name replaces the earlier one */
  for (size_t i = 0; i < *n; i++) {
    if ((*list)[i].from_len == from_len && memcmp((*list)[i].from, from, from_len) == 0) {
      free((*list)[i].to);
      (*list)[i].to = dup_n(to.ptr, to.len);
      return;
    }
  }
  *list = realloc(*list, (*n + 1) * sizeof **list);
  if (!*list) abort();
  (*list)[*n] = (rename_t){dup_n(from, from_len), dup_n(to.ptr, to.len), from_len};
  (*n)++;
}

static int init(const tw_config *config) {
  for (size_t i = 0; i < tw_config_count(config); i++) {
    tw_bytes k, v;
    tw_config_at(config, i, &k, &v);
    rename_t **list;
    size_t *n, skip;
    if (k.len >= 6 && memcmp(k.ptr, "field.", 6) == 0) list = &fields, n = &n_fields, skip = 6;
    else if (k.len >= 5 && memcmp(k.ptr, "kind.", 5) == 0) list = &kinds, n = &n_kinds, skip = 5;
    else
      return tw_refuse("unknown config key \"%.*s\" (expected field.<column> or kind.<device>)", (int)k.len,
                       (const char *)k.ptr);
    if (k.len == skip || v.len == 0)
      return tw_refuse("config key \"%.*s\" needs a name and a value", (int)k.len, (const char *)k.ptr);
    add(list, n, k.ptr + skip, k.len - skip, v);
  }
  return 0;
}

static const char *lookup(rename_t *list, size_t n, const char *name, size_t len) {
  for (size_t i = 0; i < n; i++)
    if (list[i].from_len == len && memcmp(list[i].from, name, len) == 0) return list[i].to;
  return NULL;
}

typedef struct {
  const char *name;
  size_t name_len;
  bool present;
  double value;
} measurement;

static int by_member_key(const void *a, const void *b) {
  const json_member *x = *(const json_member *const *)a, *y = *(const json_member *const *)b;
  return bytes_cmp(x->key, x->key_len, y->key, y->key_len);
}

static int by_name(const void *a, const void *b) {
  const measurement *x = a, *y = b;
  return bytes_cmp(x->name, x->name_len, y->name, y->name_len);
}

static measurement *find(measurement *ms, size_t n, const char *name, size_t len) {
  for (size_t i = 0; i < n; i++)
    if (ms[i].name_len == len && memcmp(ms[i].name, name, len) == 0) return &ms[i];
  return NULL;
}

static bool is(const json_member *m, const char *key) {
  size_t n = strlen(key);
  return m->key_len == n && memcmp(m->key, key, n) == 0;
}

static tw_status enrich(const json_object *obj, tw_outputs *out) {
  const json_member *device = json_get(obj, "device"), *ts = json_get(obj, "ts");
  if (!device || device->kind != J_STRING) return tw_invalid("field \"device\" is missing or not a string");
  if (!ts || ts->kind != J_STRING) return tw_invalid("field \"ts\" is missing or not a string");

  /* Columns in byte order; of repeated keys the last one counts. */
  const json_member **cols = malloc((obj->len + 1) * sizeof *cols);
  measurement *ms = malloc((obj->len + 2) * sizeof *ms);
  if (!cols || !ms) abort();
  size_t n_cols = 0, n = 0;
  for (size_t i = 0; i < obj->len; i++) {
    const json_member *m = &obj->members[i];
    if (is(m, "device") || is(m, "ts")) continue;
    bool later = false;
    for (size_t j = i + 1; j < obj->len && !later; j++)
      later = obj->members[j].key_len == m->key_len && memcmp(obj->members[j].key, m->key, m->key_len) == 0;
    if (!later) cols[n_cols++] = m;
  }
  qsort(cols, n_cols, sizeof *cols, by_member_key);
  for (size_t i = 0; i < n_cols; i++) {
    const json_member *c = cols[i];
    const char *name = lookup(fields, n_fields, c->key, c->key_len);
    for (size_t b = 0; !name && b < sizeof BUILT_IN / sizeof *BUILT_IN; b++)
      if (is(c, BUILT_IN[b][0])) name = BUILT_IN[b][1];
    size_t name_len = name ? strlen(name) : c->key_len;
    if (!name) name = c->key;
    measurement v = {name, name_len, false, 0};
    if (c->kind == J_NUMBER) v.present = true, v.value = c->number;
    else if (c->kind == J_STRING) v.present = parse_number_text(c->str, c->str_len, &v.value);
    measurement *old = find(ms, n, name, name_len);
    if (old) *old = v;
    else ms[n++] = v;
  }
  free(cols);
  bool any = false;
  for (size_t i = 0; i < n; i++) any |= ms[i].present;
  if (!any) {
    free(ms);
    return tw_invalid("reading from %.*s at %.*s has no measurement that parses", (int)device->str_len, device->str,
                      (int)ts->str_len, ts->str);
  }
  measurement *c = find(ms, n, "temperature_c", 13);
  if (c) {
    measurement f = {"temperature_f", 13, c->present, c->present ? c->value * 9.0 / 5.0 + 32.0 : 0};
    measurement *old = find(ms, n, "temperature_f", 13);
    if (old) *old = f;
    else ms[n++] = f;
  }
  measurement *l = find(ms, n, "flow_l_s", 8);
  if (l) {
    measurement f = {"flow_m3_h", 9, l->present, l->present ? l->value * 3.6 : 0};
    measurement *old = find(ms, n, "flow_m3_h", 9);
    if (old) *old = f;
    else ms[n++] = f;
  }
  const char *kind = lookup(kinds, n_kinds, device->str, device->str_len);
  if (!kind) {
    if (find(ms, n, "flow_l_s", 8)) kind = "flowmeter";
    else if (find(ms, n, "glucose_mg_dl", 13)) kind = "glucose-monitor";
    else if (find(ms, n, "co2_ppm", 7) || find(ms, n, "humidity_pct", 12) || find(ms, n, "light_lux", 9))
      kind = "room-sensor";
    else if (find(ms, n, "temperature_c", 13)) kind = "thermometer";
    else kind = "unknown";
  }
  qsort(ms, n, sizeof *ms, by_name);

  tw_buf b = {0};
  tw_buf_puts(&b, "{\"device\":");
  put_string(&b, device->str, device->str_len);
  tw_buf_puts(&b, ",\"ts\":");
  put_string(&b, ts->str, ts->str_len);
  tw_buf_puts(&b, ",\"kind\":");
  put_string(&b, kind, strlen(kind));
  tw_buf_puts(&b, ",\"measurements\":{");
  for (size_t i = 0; i < n; i++) {
    if (i) tw_buf_putc(&b, ',');
    put_string(&b, ms[i].name, ms[i].name_len);
    tw_buf_putc(&b, ':');
    put_number(&b, ms[i].present, ms[i].value);
  }
  tw_buf_puts(&b, "}}");
  free(ms);
  tw_emit_buf(out, device->str, device->str_len, &b);
  return TW_OK;
}

static tw_status process(const tw_event *event, tw_outputs *out) {
  tw_bytes value;
  if (!tw_event_value(event, &value)) return tw_invalid("tombstone: a reading needs a value");
  json_object obj;
  switch (json_parse_object((const char *)value.ptr, value.len, &obj)) {
    case PARSE_NOT_JSON: return tw_invalid("value is not JSON");
    case PARSE_NOT_OBJECT: return tw_invalid("value is not a JSON object");
    case PARSE_OK: break;
  }
  tw_status s = enrich(&obj, out);
  json_free(&obj);
  return s;
}

TIDEWATER_PROCESSOR(process)
TIDEWATER_INIT(init)
