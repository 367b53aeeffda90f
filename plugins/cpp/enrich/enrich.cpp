// enrich in C++: the port of plugins/rust/enrich (its crate docs are the
// specification). Built by `make plugins`.
#include <map>
#include <optional>
#include <string>

#include "readings.hpp"
#include "tidewater.hpp"

namespace {

std::map<std::string, std::string> fields, kinds;

const std::map<std::string, std::string> kBuiltIn = {
    {"temperature (celsius)", "temperature_c"},
    {"Water flow [l/s]", "flow_l_s"},
    {"glucose", "glucose_mg_dl"},
    {"isig", "isig_na"},
};

tidewater::InitResult init(const tidewater::Config& config) {
  for (const auto& [key, value] : config) {
    std::map<std::string, std::string>* table;
    std::string name;
    if (key.starts_with("field.")) table = &fields, name = key.substr(6);
    else if (key.starts_with("kind.")) table = &kinds, name = key.substr(5);
    else return std::unexpected("unknown config key \"" + key + "\" (expected field.<column> or kind.<device>)");
    if (name.empty() || value.empty()) return std::unexpected("config key \"" + key + "\" needs a name and a value");
    (*table)[name] = value;
  }
  return {};
}

std::string kind_of(const std::map<std::string, std::optional<double>>& m) {
  if (m.contains("flow_l_s")) return "flowmeter";
  if (m.contains("glucose_mg_dl")) return "glucose-monitor";
  if (m.contains("co2_ppm") || m.contains("humidity_pct") || m.contains("light_lux")) return "room-sensor";
  if (m.contains("temperature_c")) return "thermometer";
  return "unknown";
}

tidewater::Result process(const tidewater::Event& event) {
  auto text = event.value_str();
  if (!text) return tidewater::invalid("tombstone: a reading needs a value");
  auto parsed = readings::parse_json(*text);
  if (!parsed) return tidewater::invalid("value is not JSON");
  if (parsed->kind != readings::Value::Kind::Object) return tidewater::invalid("value is not a JSON object");
  const auto* device = parsed->get("device");
  if (!device || device->kind != readings::Value::Kind::String)
    return tidewater::invalid("field \"device\" is missing or not a string");
  const auto* ts = parsed->get("ts");
  if (!ts || ts->kind != readings::Value::Kind::String)
    return tidewater::invalid("field \"ts\" is missing or not a string");

  std::map<std::string, std::optional<double>> m;
  for (const auto& [column, v] : parsed->last_members()) {
    if (column == "device" || column == "ts") continue;
    std::string name = column;
    if (auto f = fields.find(column); f != fields.end()) name = f->second;
    else if (auto b = kBuiltIn.find(column); b != kBuiltIn.end()) name = b->second;
    std::optional<double> x;
    if (v->kind == readings::Value::Kind::Number) x = v->number;
    else if (v->kind == readings::Value::Kind::String) x = readings::parse_number_text(v->str);
    m[name] = x;
  }
  bool any = false;
  for (const auto& [_, x] : m) any |= x.has_value();
  if (!any) return tidewater::invalid("reading from " + device->str + " at " + ts->str + " has no measurement that parses");
  if (auto c = m.find("temperature_c"); c != m.end()) {
    auto f = c->second ? std::optional<double>(*c->second * 9.0 / 5.0 + 32.0) : std::nullopt;
    m["temperature_f"] = f;
  }
  if (auto l = m.find("flow_l_s"); l != m.end()) {
    auto f = l->second ? std::optional<double>(*l->second * 3.6) : std::nullopt;
    m["flow_m3_h"] = f;
  }
  auto k = kinds.find(device->str);
  std::string kind = k != kinds.end() ? k->second : kind_of(m);

  std::string out = "{\"device\":";
  readings::put_string(out, device->str);
  out += ",\"ts\":";
  readings::put_string(out, ts->str);
  out += ",\"kind\":";
  readings::put_string(out, kind);
  out += ",\"measurements\":{";
  bool first = true;
  for (const auto& [name, x] : m) {
    if (!first) out += ',';
    first = false;
    readings::put_string(out, name);
    out += ':';
    readings::put_number(out, x);
  }
  out += "}}";
  return std::vector{tidewater::Output{.value = std::move(out), .key = device->str}};
}

}  // namespace

TIDEWATER_PROCESSOR_WITH_INIT(process, init)
