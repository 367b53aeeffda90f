// threshold in C++: the port of plugins/rust/threshold (its crate docs are
// the specification). Built by `make plugins`.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <optional>
#include <string>

#include "readings.hpp"
#include "tidewater.hpp"

namespace {

struct Rule {
  std::optional<double> min, max, delta;
};
std::map<std::string, Rule> rules;

enum Zone : uint8_t { kBelow = 0, kWithin = 1, kAbove = 2 };

struct Track {
  uint64_t count;
  double last, min, max;
  uint8_t zone;

  std::string encode() const {
    std::string b(33, '\0');  // wasm32 is little-endian, as the format
    std::memcpy(b.data(), &count, 8);
    std::memcpy(b.data() + 8, &last, 8);
    std::memcpy(b.data() + 16, &min, 8);
    std::memcpy(b.data() + 24, &max, 8);
    b[32] = static_cast<char>(zone);
    return b;
  }
  static std::optional<Track> decode(const std::string& b) {
    if (b.size() < 33 || static_cast<unsigned char>(b[32]) > 2) return std::nullopt;
    Track t;
    std::memcpy(&t.count, b.data(), 8);
    std::memcpy(&t.last, b.data() + 8, 8);
    std::memcpy(&t.min, b.data() + 16, 8);
    std::memcpy(&t.max, b.data() + 24, 8);
    t.zone = static_cast<uint8_t>(b[32]);
    return t;
  }
};

std::string unknown(const std::string& key) {
  return "unknown config key \"" + key + "\" (expected <measurement>.min, .max or .delta)";
}

std::string num(double x) {
  std::string s;
  readings::put_number(s, x);
  return s;
}

tidewater::InitResult init(const tidewater::Config& config) {
  for (const auto& [key, value] : config) {
    auto dot = key.rfind('.');
    if (dot == std::string::npos) return std::unexpected(unknown(key));
    auto x = readings::parse_f64_strict(value);
    if (!x) return std::unexpected("config " + key + " = \"" + value + "\" is not a number");
    Rule& r = rules[key.substr(0, dot)];
    std::string what = key.substr(dot + 1);
    if (what == "min") r.min = *x;
    else if (what == "max") r.max = *x;
    else if (what == "delta") {
      if (!(*x > 0)) return std::unexpected("config " + key + " = \"" + value + "\" must be above 0");
      r.delta = *x;
    } else return std::unexpected(unknown(key));
  }
  for (const auto& [m, r] : rules)
    if (r.min && r.max && *r.min > *r.max)
      return std::unexpected(m + ".min (" + num(*r.min) + ") is above " + m + ".max (" + num(*r.max) + ")");
  return {};
}

tidewater::Output alert(const std::string& device, const std::string& ts, const std::string& measurement,
                        const char* kind, double value, double limit, std::optional<double> previous) {
  std::string s = "{\"device\":";
  readings::put_string(s, device);
  s += ",\"ts\":";
  readings::put_string(s, ts);
  s += ",\"measurement\":";
  readings::put_string(s, measurement);
  s += ",\"alert\":";
  readings::put_string(s, kind);
  s += ",\"value\":";
  readings::put_number(s, value);
  s += ",\"limit\":";
  readings::put_number(s, limit);
  s += ",\"previous\":";
  readings::put_number(s, previous);
  s += '}';
  return tidewater::Output{.value = std::move(s), .key = device};
}

tidewater::Result process(const tidewater::Event& event) {
  using K = readings::Value::Kind;
  auto text = event.value_str();
  if (!text) return tidewater::invalid("tombstone: a reading needs a value");
  auto parsed = readings::parse_json(*text);
  if (!parsed) return tidewater::invalid("value is not JSON");
  const readings::Value empty;
  const readings::Value& obj = parsed->kind == K::Object ? *parsed : empty;
  const auto* ms = obj.get("measurements");
  if (!ms || ms->kind != K::Object) return tidewater::invalid("field \"measurements\" is missing or not an object");
  const readings::Value* field[3];
  const char* names[3] = {"device", "ts", "kind"};
  for (int i = 0; i < 3; i++) {
    field[i] = obj.get(names[i]);
    if (!field[i] || field[i]->kind != K::String)
      return tidewater::invalid(std::string("field \"") + names[i] + "\" is missing or not a string");
  }
  const std::string& device = field[0]->str;
  const std::string& ts = field[1]->str;
  std::vector<tidewater::Output> alerts;
  for (const auto& [measurement, v] : ms->last_members()) {
    if (v->kind != K::Number) continue;
    double x = v->number;
    Rule rule;
    if (auto r = rules.find(measurement); r != rules.end()) rule = r->second;
    std::string key = device + "/" + measurement;
    std::optional<Track> before;
    if (auto raw = tidewater::state::get(key)) before = Track::decode(*raw);
    uint8_t now = rule.min && x < *rule.min ? kBelow : rule.max && x > *rule.max ? kAbove : kWithin;
    uint8_t was = before ? before->zone : kWithin;
    std::optional<double> previous = before ? std::optional<double>(before->last) : std::nullopt;
    if (now != was) {
      const char* kind;
      std::optional<double> limit;
      if (now == kBelow) kind = "below-min", limit = rule.min;
      else if (now == kAbove) kind = "above-max", limit = rule.max;
      else if (was == kBelow) kind = "back-in-range", limit = rule.min;
      else kind = "back-in-range", limit = rule.max;
      if (limit) alerts.push_back(alert(device, ts, measurement, kind, x, *limit, previous));
    }
    if (rule.delta && previous && std::fabs(x - *previous) > *rule.delta)
      alerts.push_back(alert(device, ts, measurement, "jump", x, *rule.delta, previous));
    Track t = before ? Track{before->count + 1, x, std::fmin(before->min, x), std::fmax(before->max, x), now}
                     : Track{1, x, x, x, now};
    tidewater::state::set(key, t.encode());
  }
  return alerts;
}

}  // namespace

TIDEWATER_PROCESSOR_WITH_INIT(process, init)
