/* See readings.h. */
#include "readings.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------- parsing ---------- */

typedef struct {
  const unsigned char *p, *end;
  int depth;
} parser;

static void ws(parser *ps) {
  while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static int hex4(const unsigned char *p) {
  int v = 0;
  for (int i = 0; i < 4; i++) {
    int c = p[i], d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else return -1;
    v = v * 16 + d;
  }
  return v;
}

static void put_utf8(tw_buf *b, uint32_t cp) {
  if (cp < 0x80) tw_buf_putc(b, (char)cp);
  else if (cp < 0x800) {
    tw_buf_putc(b, (char)(0xC0 | (cp >> 6)));
    tw_buf_putc(b, (char)(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    tw_buf_putc(b, (char)(0xE0 | (cp >> 12)));
    tw_buf_putc(b, (char)(0x80 | ((cp >> 6) & 0x3F)));
    tw_buf_putc(b, (char)(0x80 | (cp & 0x3F)));
  } else {
    tw_buf_putc(b, (char)(0xF0 | (cp >> 18)));
    tw_buf_putc(b, (char)(0x80 | ((cp >> 12) & 0x3F)));
    tw_buf_putc(b, (char)(0x80 | ((cp >> 6) & 0x3F)));
    tw_buf_putc(b, (char)(0x80 | (cp & 0x3F)));
  }
}

/* Length of the valid UTF-8 sequence at p (0: invalid). */
static size_t utf8_len(const unsigned char *p, const unsigned char *end) {
  unsigned c = p[0];
  size_t n;
  uint32_t cp, min;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) n = 2, cp = c & 0x1F, min = 0x80;
  else if (c >= 0xE0 && c <= 0xEF) n = 3, cp = c & 0x0F, min = 0x800;
  else if (c >= 0xF0 && c <= 0xF4) n = 4, cp = c & 0x07, min = 0x10000;
  else return 0;
  if ((size_t)(end - p) < n) return 0;
  for (size_t i = 1; i < n; i++) {
    if ((p[i] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (p[i] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

/* Parses a string at ps->p (on the opening quote); keeps it in `out` when non-NULL. */
static bool parse_string(parser *ps, tw_buf *out) {
  ps->p++;
  for (;;) {
    if (ps->p >= ps->end) return false;
    unsigned c = *ps->p;
    if (c == '"') {
      ps->p++;
      return true;
    }
    if (c < 0x20) return false;
    if (c == '\\') {
      if (ps->end - ps->p < 2) return false;
      unsigned e = ps->p[1];
      ps->p += 2;
      char simple = 0;
      switch (e) {
        case '"': simple = '"'; break;
        case '\\': simple = '\\'; break;
        case '/': simple = '/'; break;
        case 'b': simple = '\b'; break;
        case 'f': simple = '\f'; break;
        case 'n': simple = '\n'; break;
        case 'r': simple = '\r'; break;
        case 't': simple = '\t'; break;
        case 'u': {
          if (ps->end - ps->p < 4) return false;
          int u = hex4(ps->p);
          if (u < 0) return false;
          ps->p += 4;
          uint32_t cp = (uint32_t)u;
          if (u >= 0xDC00 && u <= 0xDFFF) return false;
          if (u >= 0xD800 && u <= 0xDBFF) {
            if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u') return false;
            int lo = hex4(ps->p + 2);
            if (lo < 0xDC00 || lo > 0xDFFF) return false;
            ps->p += 6;
            cp = 0x10000 + (((uint32_t)u - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
          }
          if (out) put_utf8(out, cp);
          continue;
        }
        default: return false;
      }
      if (out) tw_buf_putc(out, simple);
      continue;
    }
    size_t n = utf8_len(ps->p, ps->end);
    if (!n) return false;
    if (out) tw_buf_put(out, ps->p, n);
    ps->p += n;
  }
}

static bool parse_number(parser *ps, double *out) {
  const unsigned char *s = ps->p;
  if (ps->p < ps->end && *ps->p == '-') ps->p++;
  if (ps->p >= ps->end) return false;
  if (*ps->p == '0') ps->p++;
  else if (*ps->p >= '1' && *ps->p <= '9')
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') ps->p++;
  else return false;
  if (ps->p < ps->end && *ps->p == '.') {
    ps->p++;
    const unsigned char *d = ps->p;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') ps->p++;
    if (ps->p == d) return false;
  }
  if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
    ps->p++;
    if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-')) ps->p++;
    const unsigned char *d = ps->p;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') ps->p++;
    if (ps->p == d) return false;
  }
  size_t n = (size_t)(ps->p - s);
  char small[64], *tmp = n < sizeof small ? small : malloc(n + 1);
  if (!tmp) abort();
  memcpy(tmp, s, n);
  tmp[n] = 0;
  double x = strtod(tmp, NULL);
  if (tmp != small) free(tmp);
  if (isinf(x)) return false;
  *out = x;
  return true;
}

static bool parse_value(parser *ps, json_member *keep, int level);

static bool literal(parser *ps, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) return false;
  ps->p += n;
  return true;
}

static void object_push(json_object *o, json_member *m) {
  o->members = realloc(o->members, (o->len + 1) * sizeof *o->members);
  if (!o->members) abort();
  o->members[o->len++] = *m;
}

static bool take_str(tw_buf *b, char **s, size_t *len) {
  *len = b->len;
  tw_buf_putc(b, 0); /* NUL-terminate for convenience */
  *s = (char *)b->ptr;
  return true;
}

/* Parses an object; keeps its members in `o` when non-NULL and level < 2. */
static bool parse_object(parser *ps, json_object *o, int level) {
  if (++ps->depth >= 128) return false; /* serde_json: 127 levels at most */
  ps->p++;
  ws(ps);
  if (ps->p < ps->end && *ps->p == '}') {
    ps->p++;
    ps->depth--;
    return true;
  }
  for (;;) {
    ws(ps);
    if (ps->p >= ps->end || *ps->p != '"') return false;
    json_member m;
    memset(&m, 0, sizeof m);
    tw_buf kb = {0};
    if (!parse_string(ps, o ? &kb : NULL)) {
      tw_buf_free(&kb);
      return false;
    }
    ws(ps);
    if (ps->p >= ps->end || *ps->p != ':') {
      tw_buf_free(&kb);
      return false;
    }
    ps->p++;
    ws(ps);
    if (!parse_value(ps, o ? &m : NULL, level + 1)) {
      tw_buf_free(&kb);
      if (o) {
        free(m.str);
        if (m.object) json_free(m.object), free(m.object);
      }
      return false;
    }
    if (o) {
      take_str(&kb, &m.key, &m.key_len);
      object_push(o, &m);
    }
    ws(ps);
    if (ps->p < ps->end && *ps->p == ',') {
      ps->p++;
      continue;
    }
    if (ps->p < ps->end && *ps->p == '}') {
      ps->p++;
      ps->depth--;
      return true;
    }
    return false;
  }
}

static bool parse_array(parser *ps) {
  if (++ps->depth >= 128) return false; /* serde_json: 127 levels at most */
  ps->p++;
  ws(ps);
  if (ps->p < ps->end && *ps->p == ']') {
    ps->p++;
    ps->depth--;
    return true;
  }
  for (;;) {
    ws(ps);
    if (!parse_value(ps, NULL, 99)) return false;
    ws(ps);
    if (ps->p < ps->end && *ps->p == ',') {
      ps->p++;
      continue;
    }
    if (ps->p < ps->end && *ps->p == ']') {
      ps->p++;
      ps->depth--;
      return true;
    }
    return false;
  }
}

static bool parse_value(parser *ps, json_member *keep, int level) {
  if (ps->p >= ps->end) return false;
  switch (*ps->p) {
    case '{': {
      if (keep && level < 2) {
        json_object *o = calloc(1, sizeof *o);
        if (!o) abort();
        keep->kind = J_OBJECT;
        keep->object = o;
        return parse_object(ps, o, level);
      }
      if (keep) keep->kind = J_OBJECT;
      return parse_object(ps, NULL, level);
    }
    case '[':
      if (keep) keep->kind = J_ARRAY;
      return parse_array(ps);
    case '"': {
      if (!keep) return parse_string(ps, NULL);
      tw_buf b = {0};
      if (!parse_string(ps, &b)) {
        tw_buf_free(&b);
        return false;
      }
      keep->kind = J_STRING;
      take_str(&b, &keep->str, &keep->str_len);
      return true;
    }
    case 't':
      if (keep) keep->kind = J_BOOL;
      return literal(ps, "true");
    case 'f':
      if (keep) keep->kind = J_BOOL;
      return literal(ps, "false");
    case 'n':
      if (keep) keep->kind = J_NULL;
      return literal(ps, "null");
    default: {
      double x;
      if (!parse_number(ps, &x)) return false;
      if (keep) {
        keep->kind = J_NUMBER;
        keep->number = x;
      }
      return true;
    }
  }
}

void json_free(json_object *o) {
  for (size_t i = 0; i < o->len; i++) {
    json_member *m = &o->members[i];
    free(m->key);
    free(m->str);
    if (m->object) {
      json_free(m->object);
      free(m->object);
    }
  }
  free(o->members);
  o->members = NULL;
  o->len = 0;
}

parse_result json_parse_object(const char *text, size_t len, json_object *out) {
  parser ps = {(const unsigned char *)text, (const unsigned char *)text + len, 0};
  memset(out, 0, sizeof *out);
  json_member top;
  memset(&top, 0, sizeof top);
  ws(&ps);
  bool ok = parse_value(&ps, &top, 0);
  if (ok) {
    ws(&ps);
    ok = ps.p == ps.end;
  }
  if (!ok) {
    free(top.str);
    if (top.object) json_free(top.object), free(top.object);
    return PARSE_NOT_JSON;
  }
  if (top.kind != J_OBJECT) {
    free(top.str);
    return PARSE_NOT_OBJECT;
  }
  *out = *top.object;
  free(top.object);
  return PARSE_OK;
}

const json_member *json_get(const json_object *o, const char *key) {
  size_t n = strlen(key);
  for (size_t i = o->len; i-- > 0;) {
    if (o->members[i].key_len == n && memcmp(o->members[i].key, key, n) == 0) return &o->members[i];
  }
  return NULL;
}

int bytes_cmp(const char *a, size_t al, const char *b, size_t bl) {
  int c = memcmp(a, b, al < bl ? al : bl);
  if (c) return c;
  return al < bl ? -1 : al > bl ? 1 : 0;
}

/* ---------- number text ---------- */

static bool grammar(const char *s, size_t len) {
  size_t i = 0, digits = 0;
  if (i < len && (s[i] == '+' || s[i] == '-')) i++;
  while (i < len && s[i] >= '0' && s[i] <= '9') i++, digits++;
  if (i < len && s[i] == '.') {
    i++;
    while (i < len && s[i] >= '0' && s[i] <= '9') i++, digits++;
  }
  if (!digits) return false;
  if (i < len && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < len && (s[i] == '+' || s[i] == '-')) i++;
    size_t e = 0;
    while (i < len && s[i] >= '0' && s[i] <= '9') i++, e++;
    if (!e) return false;
  }
  return i == len;
}

bool parse_f64_strict(const char *s, size_t len, double *out) {
  if (!grammar(s, len)) return false;
  char *tmp = malloc(len + 1);
  if (!tmp) abort();
  memcpy(tmp, s, len);
  tmp[len] = 0;
  double x = strtod(tmp, NULL);
  free(tmp);
  if (!isfinite(x)) return false;
  *out = x;
  return true;
}

static bool ascii_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r'; }

bool parse_number_text(const char *s, size_t len, double *out) {
  while (len && ascii_ws(*s)) s++, len--;
  while (len && ascii_ws(s[len - 1])) len--;
  return parse_f64_strict(s, len, out);
}

/* ---------- writing ---------- */

/* The digits of `buf` ("d.ddde±x" from %.*e) into `digits`; returns the exponent. */
static int split_sci(const char *buf, char *digits, size_t *k) {
  size_t n = 0;
  const char *p = buf;
  for (; *p && *p != 'e'; p++)
    if (*p >= '0' && *p <= '9') digits[n++] = *p;
  digits[n] = 0;
  *k = n;
  return *p == 'e' ? atoi(p + 1) : 0;
}

/* Adds (+1) or subtracts (-1) one unit in the last place of digits[0..k) × 10^exp. */
static void step(char *digits, size_t k, int *exp, int dir) {
  if (dir > 0) {
    size_t i = k;
    while (i-- > 0) {
      if (digits[i] < '9') {
        digits[i]++;
        return;
      }
      digits[i] = '0';
    }
    memmove(digits + 1, digits, k); /* 99..9 + 1 = 100..0: one more digit, drop the last */
    digits[0] = '1';
    digits[k] = 0;
    (*exp)++;
  } else {
    size_t i = k;
    while (i-- > 0) {
      if (digits[i] > '0') {
        digits[i]--;
        break;
      }
      digits[i] = '9';
    }
    if (digits[0] == '0') { /* 100..0 - 1 = 99..9 with one digit less: keep k digits */
      memmove(digits, digits + 1, k - 1);
      digits[k - 1] = '9';
      (*exp)--;
    }
  }
}

static double value_of(const char *digits, size_t k, int exp) {
  char buf[64];
  snprintf(buf, sizeof buf, "%c.%se%d", digits[0], k > 1 ? digits + 1 : "0", exp);
  return strtod(buf, NULL);
}

/* The shortest digits that read back to x (> 0), the closest such; n as in put_js. */
static void shortest(double x, char *digits, size_t *k, int *n) {
  char buf[64];
  for (int p = 1; p <= 17; p++) {
    snprintf(buf, sizeof buf, "%.*e", p - 1, x);
    int exp = split_sci(buf, digits, k);
    double y = value_of(digits, *k, exp);
    if (y == x) {
      *n = exp + 1;
      return;
    }
    /* The other neighbour with p digits may read back where the nearest does
     * not (just above a power of two the gap below is half the gap above). */
    char other[32];
    memcpy(other, digits, *k + 1);
    int oexp = exp;
    step(other, *k, &oexp, y < x ? 1 : -1);
    if (value_of(other, *k, oexp) == x) {
      memcpy(digits, other, *k + 1);
      *n = oexp + 1;
      return;
    }
  }
  snprintf(buf, sizeof buf, "%.16e", x);
  *n = split_sci(buf, digits, k) + 1;
}

void put_number(tw_buf *b, bool present, double x) {
  if (!present || !isfinite(x)) {
    tw_buf_puts(b, "null");
    return;
  }
  if (x == 0) {
    tw_buf_putc(b, '0');
    return;
  }
  if (x < 0) {
    tw_buf_putc(b, '-');
    x = -x;
  }
  char digits[32];
  size_t k;
  int n;
  shortest(x, digits, &k, &n);
  while (k > 1 && digits[k - 1] == '0') digits[--k] = 0;
  int ki = (int)k;
  if (ki <= n && n <= 21) {
    tw_buf_put(b, digits, k);
    for (int i = 0; i < n - ki; i++) tw_buf_putc(b, '0');
  } else if (0 < n && n <= 21) {
    tw_buf_put(b, digits, (size_t)n);
    tw_buf_putc(b, '.');
    tw_buf_put(b, digits + n, k - (size_t)n);
  } else if (-6 < n && n <= 0) {
    tw_buf_puts(b, "0.");
    for (int i = 0; i < -n; i++) tw_buf_putc(b, '0');
    tw_buf_put(b, digits, k);
  } else {
    tw_buf_putc(b, digits[0]);
    if (k > 1) {
      tw_buf_putc(b, '.');
      tw_buf_put(b, digits + 1, k - 1);
    }
    tw_buf_printf(b, "e%c%d", n > 0 ? '+' : '-', abs(n - 1));
  }
}

void put_string(tw_buf *b, const char *s, size_t len) {
  static const char hex[] = "0123456789abcdef";
  tw_buf_putc(b, '"');
  size_t run = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    const char *esc = NULL;
    char u[7];
    if (c == '"') esc = "\\\"";
    else if (c == '\\') esc = "\\\\";
    else if (c == '\b') esc = "\\b";
    else if (c == '\f') esc = "\\f";
    else if (c == '\n') esc = "\\n";
    else if (c == '\r') esc = "\\r";
    else if (c == '\t') esc = "\\t";
    else if (c < 0x20) {
      u[0] = '\\', u[1] = 'u', u[2] = '0', u[3] = '0', u[4] = hex[c >> 4], u[5] = hex[c & 15], u[6] = 0;
      esc = u;
    }
    if (esc) {
      tw_buf_put(b, s + run, i - run);
      tw_buf_puts(b, esc);
      run = i + 1;
    }
  }
  tw_buf_put(b, s + run, len - run);
  tw_buf_putc(b, '"');
}
