// {{name}}: upper-cases each value and counts the events it has seen.
#include <string>

#include "tidewater.hpp"

namespace {

tidewater::Result process(const tidewater::Event& event) {
  auto text = event.value_str();
  if (!text) return tidewater::invalid("value is a tombstone");
  auto before = tidewater::state::get("seen");
  unsigned long long seen = (before ? std::stoull(*before) : 0) + 1;
  tidewater::state::set("seen", std::to_string(seen));
  tidewater::log::info("event " + std::to_string(seen));
  std::string upper(*text);
  for (char& c : upper)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
  tidewater::Output out{.value = std::move(upper)};
  if (event.key) out.key = std::string(tidewater::as_text(*event.key));
  out.headers.emplace_back("seen", std::to_string(seen));
  return std::vector{std::move(out)};
}

}  // namespace

TIDEWATER_PROCESSOR(process)
