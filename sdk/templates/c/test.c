/* Unit test of {{name}}, natively: make test. The host's imports are
 * replaced by an in-memory state (test_host.c). */
#include <assert.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "processor.h"

static processor_event_t event(const char *value) {
  processor_event_t e;
  memset(&e, 0, sizeof e);
  if (value) {
    e.value.is_some = true;
    processor_string_dup((processor_string_t *)&e.value.val, value);
  }
  return e;
}

static processor_list_result_list_output_process_error_t run(const char *value) {
  processor_list_event_t events = {malloc(sizeof(processor_event_t)), 1};
  events.ptr[0] = event(value);
  processor_list_result_list_output_process_error_t ret;
  exports_processor_process(&events, &ret);
  return ret;
}

int main(void) {
  processor_list_result_list_output_process_error_t r = run("hi");
  assert(r.len == 1 && !r.ptr[0].is_err);
  processor_output_t *o = &r.ptr[0].val.ok.ptr[0];
  assert(o->value.val.len == 2 && memcmp(o->value.val.ptr, "HI", 2) == 0);
  processor_list_result_list_output_process_error_free(&r);

  r = run("yo");
  o = &r.ptr[0].val.ok.ptr[0];
  assert(o->headers.len == 1 && o->headers.ptr[0].f1.len == 1 && o->headers.ptr[0].f1.ptr[0] == '2');
  processor_list_result_list_output_process_error_free(&r);

  r = run(NULL);
  assert(r.ptr[0].is_err && r.ptr[0].val.err.tag == TIDEWATER_PROCESSOR_TYPES_PROCESS_ERROR_INVALID);
  processor_list_result_list_output_process_error_free(&r);
  puts("1 passed, 0 failed");
  return 0;
}
