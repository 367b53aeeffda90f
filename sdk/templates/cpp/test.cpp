// Unit test of {{name}}, natively (g++, C++23): make test. The host's imports
// are replaced by an in-memory state (test_host.cpp).
#include <cassert>
#include <cstdio>
#include <string>

#include "processor_cpp.h"

using tidewater::processor::types::Event;

static Event event(const char* value) {
  Event e{wit::string::from_view("in"), 0, 0, 0, std::nullopt, std::nullopt, {}};
  if (value) {
    std::string_view v(value);
    e.value = wit::vector<uint8_t>::from_view(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(v.data()), v.size()));
  }
  return e;
}

static auto run(const char* value) {
  auto events = wit::vector<Event>::allocate(1);
  events.initialize(0, event(value));
  return exports::processor::Process(std::move(events));
}

int main() {
  auto r = run("hi");
  assert(r.size() == 1 && r[0].has_value());
  auto& v = *r[0]->operator[](0).value;
  assert(std::string_view(reinterpret_cast<const char*>(v.data()), v.size()) == "HI");
  auto r2 = run("yo");
  auto& h = std::get<1>(r2[0]->operator[](0).headers[0]);
  assert(h.size() == 1 && h[0] == '2');
  auto r3 = run(nullptr);
  assert(!r3[0].has_value());
  std::puts("1 passed, 0 failed");
  return 0;
}
