/* The host's imports, natively, for unit tests: an in-memory state and a log on stderr. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { uint8_t *k, *v; size_t kl, vl; } entry;
static entry entries[256];
static size_t n_entries;

static entry *find(const uint8_t *k, size_t kl) {
  for (size_t i = 0; i < n_entries; i++)
    if (entries[i].kl == kl && memcmp(entries[i].k, k, kl) == 0) return &entries[i];
  return NULL;
}

static uint8_t *copy(const uint8_t *p, size_t n) {
  uint8_t *c = malloc(n ? n : 1);
  memcpy(c, p, n);
  return c;
}

void __wasm_import_tidewater_processor_state_get(uint8_t *k, size_t kl, uint8_t *ret) {
  entry *e = find(k, kl);
  memset(ret, 0, 3 * sizeof(void *));
  if (!e) return;
  ret[0] = 1;
  *(uint8_t **)(ret + sizeof(void *)) = copy(e->v, e->vl);
  *(size_t *)(ret + 2 * sizeof(void *)) = e->vl;
}

void __wasm_import_tidewater_processor_state_set(uint8_t *k, size_t kl, uint8_t *v, size_t vl) {
  entry *e = find(k, kl);
  if (!e) {
    e = &entries[n_entries++];
    e->k = copy(k, kl);
    e->kl = kl;
  } else {
    free(e->v);
  }
  e->v = copy(v, vl);
  e->vl = vl;
}

void __wasm_import_tidewater_processor_state_delete(uint8_t *k, size_t kl) {
  entry *e = find(k, kl);
  if (e) e->kl = 0;
}

void __wasm_import_tidewater_processor_log_log(int32_t level, uint8_t *m, size_t ml) {
  fprintf(stderr, "[%d] %.*s\n", level, (int)ml, (const char *)m);
}

/* The component-type object is wasm-only; natively there is nothing to link. */
void __component_type_object_force_link_processor(void) {}
