"""Writes enrich.json and threshold.json, the conformance cases (see README.md).

The expected values are written by hand from the specification (the crate docs
of plugins/rust/enrich, plugins/rust/threshold and plugins/rust/readings).
Run: python3 tests/conformance/cases.py
"""
import os
os.chdir(os.path.dirname(os.path.abspath(__file__)))

# ---------------------------------------------------------------- enrich
import json
def ev(value, expect, **kw):
    d = {"value": value}
    d.update(kw)
    d["expect"] = expect
    return d
def ok(key, value):
    return {"ok": [{"key": key, "value": value}]}
def inv(m): return {"invalid": m}
NOTJSON = inv("value is not JSON")
cases = []
def case(name, batches, **kw):
    c = {"name": name}
    c.update(kw)
    c["batches"] = batches
    c["state"] = {}
    cases.append(c)

case("celsius becomes a thermometer reading with fahrenheit", [[
    ev('{"device":"buoy-b01","ts":"2016-02-15T00:00:00Z","temperature (celsius)":4.929}',
       ok("buoy-b01", '{"device":"buoy-b01","ts":"2016-02-15T00:00:00Z","kind":"thermometer","measurements":{"temperature_c":4.929,"temperature_f":40.8722}}')),
]])
case("flow gets cubic metres per hour and the record key is the device", [[
    ev('{"device":"pipeline-7","ts":"2019-01-01 00:00:00","Water flow [l/s]":100.59}',
       ok("pipeline-7", '{"device":"pipeline-7","ts":"2019-01-01 00:00:00","kind":"flowmeter","measurements":{"flow_l_s":100.59,"flow_m3_h":362.124}}'),
       key={"hex": "00ff"}),
]])
case("a null field, a nil cell and a number in a string", [[
    ev('{"device":"cgm-3","ts":"2010-03-24 09:51:00","isig":null,"glucose":258}',
       ok("cgm-3", '{"device":"cgm-3","ts":"2010-03-24 09:51:00","kind":"glucose-monitor","measurements":{"glucose_mg_dl":258,"isig_na":null}}')),
    ev('{"device":"cgm-3","ts":"t","isig":"nil","glucose":"258"}',
       ok("cgm-3", '{"device":"cgm-3","ts":"t","kind":"glucose-monitor","measurements":{"glucose_mg_dl":258,"isig_na":null}}')),
    ev('{"device":"office-12","ts":"t","Temperature":"23.7","Humidity":"", "CO2":true, "Light":{"lux":3}, "HumidityRatio":[1]}',
       ok("office-12", '{"device":"office-12","ts":"t","kind":"unknown","measurements":{"CO2":null,"Humidity":null,"HumidityRatio":null,"Light":null,"Temperature":23.7}}')),
]])
case("a tombstone and an empty value are different errors", [[
    ev(None, inv("tombstone: a reading needs a value")),
    ev("", NOTJSON),
    ev("   ", NOTJSON),
]])
case("values that are not JSON are invalid", [[
    ev("not json", NOTJSON),
    ev('{"device":"d","ts":"t","glucose":1', NOTJSON),
    ev('{"device":"d","ts":"t","glucose":1} x', NOTJSON),
    ev({"hex": "7b22646576696365223a2264ff222c227473223a2274222c22676c75636f7365223a317d"}, NOTJSON),
    ev('{"device":"d\\ud800","ts":"t","glucose":1}', NOTJSON),
    ev('{"device":"d","ts":"t","glucose":NaN}', NOTJSON),
    ev('{"device":"d","ts":"t","glucose":1e400}', NOTJSON),
    ev('{"device":"d","ts":"t","glucose":01}', NOTJSON),
    ev('{"device":"d","ts":"t","glucose":1,}', NOTJSON),
    ev("{'device':'d'}", NOTJSON),
    ev('{"device":"tab\there","ts":"t","glucose":1}', NOTJSON),
    ev({"hex": "efbbbf7b22646576696365223a2264222c227473223a2274222c22676c75636f7365223a317d"}, NOTJSON),
    ev("[1]", inv("value is not a JSON object")),
    ev('"text"', inv("value is not a JSON object")),
    ev("null", inv("value is not a JSON object")),
]])
case("nesting: 127 levels are JSON, 128 are not (serde_json's limit)", [[
    ev('{"device":"d","ts":"t","glucose":1,"deep":' + "[" * 126 + "]" * 126 + "}",
       ok("d", '{"device":"d","ts":"t","kind":"glucose-monitor","measurements":{"deep":null,"glucose_mg_dl":1}}')),
    ev('{"device":"d","ts":"t","glucose":1,"deep":' + "[" * 127 + "]" * 127 + "}", NOTJSON),
    ev('{"device":"d","ts":"t","glucose":1,"deep":"' + "[" * 200 + '"}',
       ok("d", '{"device":"d","ts":"t","kind":"glucose-monitor","measurements":{"deep":null,"glucose_mg_dl":1}}')),
]])
case("missing or mistyped device and ts", [[
    ev('{"ts":"t","glucose":1}', inv('field "device" is missing or not a string')),
    ev('{"device":7,"ts":"t","glucose":1}', inv('field "device" is missing or not a string')),
    ev('{"device":"d","glucose":1}', inv('field "ts" is missing or not a string')),
    ev('{"device":"d","ts":null,"glucose":1}', inv('field "ts" is missing or not a string')),
    ev('{}', inv('field "device" is missing or not a string')),
]])
case("a reading with no measurement that parses is invalid", [[
    ev('{"device":"cgm","ts":"t","isig":"nil"}', inv("reading from cgm at t has no measurement that parses")),
    ev('{"device":"cgm","ts":"t"}', inv("reading from cgm at t has no measurement that parses")),
    ev('{"device":"dé vice","ts":"2010","a":null,"b":"x"}', inv("reading from dé vice at 2010 has no measurement that parses")),
]])
case("headers that are not UTF-8, repeated header names and the key do not change the output", [[
    ev('{"device":"d","ts":"t","glucose":5}', ok("d", '{"device":"d","ts":"t","kind":"glucose-monitor","measurements":{"glucose_mg_dl":5}}'),
       key={"hex": "fffe00"},
       headers=[["trace", {"hex": "ff00fe"}], ["trace", "second"], ["empty", ""], ["x-ü", {"hex": "c3"}]]),
]])
MIB = 1 << 20
case("a 1 MiB value", [[
    ev({"before": '{"device":"big","ts":"', "repeat": "x", "times": MIB, "after": '","glucose":1}'},
       {"ok": [{"key": "big", "value": {"before": '{"device":"big","ts":"', "repeat": "x", "times": MIB,
                                        "after": '","kind":"glucose-monitor","measurements":{"glucose_mg_dl":1}}'}}]}),
    ev({"before": '{"device":"big","ts":"t","note":"', "repeat": "é", "times": MIB // 2, "after": '","glucose":2}'},
       ok("big", '{"device":"big","ts":"t","kind":"glucose-monitor","measurements":{"glucose_mg_dl":2,"note":null}}')),
]], memory_bytes=128 << 20)
# ^ StarlingMonkey (JavaScript) needs 80-96 MiB for this batch; the others fit the default 64 MiB.
case("non-ASCII text, escapes and the byte order of names", [[
    ev('{"device":"Bøje-7 🌊","ts":"2016-02-15T00:00:00+01:00","température":"4","\ue000":1,"🌊":2,"z":3,"Z":4,"é":5}',
       ok("Bøje-7 🌊", '{"device":"Bøje-7 🌊","ts":"2016-02-15T00:00:00+01:00","kind":"unknown","measurements":{"Z":4,"température":4,"z":3,"é":5,"\ue000":1,"🌊":2}}')),
    ev('{"device":"q\\"uote\\\\back\\/slash","ts":"a\\u0001b\\nc\\td\\u001fe\\u007ff\\b\\f\\r","glucose":1}',
       ok('q"uote\\back/slash', '{"device":"q\\"uote\\\\back/slash","ts":"a\\u0001b\\nc\\td\\u001fe\x7ff\\b\\f\\r","kind":"glucose-monitor","measurements":{"glucose_mg_dl":1}}')),
    ev('{"device":"\\ud83c\\udf0a\\u00e9","ts":"t","glucose":1}',
       ok("🌊é", '{"device":"🌊é","ts":"t","kind":"glucose-monitor","measurements":{"glucose_mg_dl":1}}')),
]])
case("numbers are written in the one canonical form", [[
    ev('{"device":"n","ts":"t","a":0.1,"b":0.30000000000000004,"c":1e21,"d":1e-7,"e":0.000001,"f":-0.0,"g":5e-324,"h":123456789012345678901234567890,"i":9007199254740993,"j":2.5e-7,"k":-1.5e300,"l":100,"m":1E2,"n":0.5e-6,"o":999999999999999900000,"p":2.2250738585072011e-308,"q":1.7976931348623157e308,"r":-42.125,"s":1234567.125}',
       ok("n", '{"device":"n","ts":"t","kind":"unknown","measurements":{"a":0.1,"b":0.30000000000000004,"c":1e+21,"d":1e-7,"e":0.000001,"f":0,"g":5e-324,"h":1.2345678901234568e+29,"i":9007199254740992,"j":2.5e-7,"k":-1.5e+300,"l":100,"m":100,"n":5e-7,"o":999999999999999900000,"p":2.225073858507201e-308,"q":1.7976931348623157e+308,"r":-42.125,"s":1234567.125}}')),
    ev('{"device":"n","ts":"t","temperature (celsius)":1.7976931348623157e308}',
       ok("n", '{"device":"n","ts":"t","kind":"thermometer","measurements":{"temperature_c":1.7976931348623157e+308,"temperature_f":null}}')),
    ev('{"device":"n","ts":"t","temperature (celsius)":-40,"Water flow [l/s]":0.1}',
       ok("n", '{"device":"n","ts":"t","kind":"flowmeter","measurements":{"flow_l_s":0.1,"flow_m3_h":0.36000000000000004,"temperature_c":-40,"temperature_f":-40}}')),
]])
case("numbers in strings follow one grammar", [[
    ev('{"device":"s","ts":"t","a":" 4.5\\t","b":"1.","c":".5","d":"+2e3","e":"-1E-2","f":"0x10","g":"1_000","h":"inf","i":"Infinity","j":"NaN","k":"\\u00a04","l":"1e","m":"","n":"1e400","o":"1e-400","p":"١","q":"\\n12\\r"}',
       ok("s", '{"device":"s","ts":"t","kind":"unknown","measurements":{"a":4.5,"b":1,"c":0.5,"d":2000,"e":-0.01,"f":null,"g":null,"h":null,"i":null,"j":null,"k":null,"l":null,"m":null,"n":null,"o":0,"p":null,"q":12}}')),
]])
case("repeated keys: the last one wins; renamed columns: the later name wins", [[
    ev('{"device":"a","ts":"t","device":"b","glucose":1,"glucose":2}',
       ok("b", '{"device":"b","ts":"t","kind":"glucose-monitor","measurements":{"glucose_mg_dl":2}}')),
    ev('{"device":"a","ts":"t","glucose":1,"glucose_mg_dl":2,"temperature_f":99,"temperature_c":"10"}',
       ok("a", '{"device":"a","ts":"t","kind":"glucose-monitor","measurements":{"glucose_mg_dl":2,"temperature_c":10,"temperature_f":50}}')),
]])
case("config renames columns and names kinds", [[
    ev('{"device":"lab-1","ts":"t","CO2":"412","Temp":21.5}',
       ok("lab-1", '{"device":"lab-1","ts":"t","kind":"room-sensor","measurements":{"co2_ppm":412,"temperature_c":21.5,"temperature_f":70.7}}')),
    ev('{"device":"buoy-b01","ts":"t","Temp":"4"}',
       ok("buoy-b01", '{"device":"buoy-b01","ts":"t","kind":"ocean-buoy","measurements":{"temperature_c":4,"temperature_f":39.2}}')),
]], config={"field.CO2": "co2_ppm", "field.Temp": "temperature_c", "kind.buoy-b01": "ocean-buoy"})
case("an unknown config key is refused", [], config={"colour": "red"},
     init_error='unknown config key "colour" (expected field.<column> or kind.<device>)')
case("an empty config value is refused", [], config={"field.CO2": ""},
     init_error='config key "field.CO2" needs a name and a value')
case("state is not touched and batches are independent", [
    [ev('{"device":"d","ts":"1","glucose":1}', ok("d", '{"device":"d","ts":"1","kind":"glucose-monitor","measurements":{"glucose_mg_dl":1}}')),
     ev("x", NOTJSON),
     ev('{"device":"d","ts":"2","glucose":2}', ok("d", '{"device":"d","ts":"2","kind":"glucose-monitor","measurements":{"glucose_mg_dl":2}}'))],
    [],
    [ev('{"device":"d","ts":"3","glucose":3}', ok("d", '{"device":"d","ts":"3","kind":"glucose-monitor","measurements":{"glucose_mg_dl":3}}'))],
])
doc = {"processor": "enrich",
       "about": "Conformance cases for enrich (plugins/rust/enrich is the specification). Format: README.md beside this file.",
       "cases": cases}
open("enrich.json", "w").write(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")

# ---------------------------------------------------------------- threshold
import json, struct
def track(count, last, lo, hi, zone):
    return {"hex": struct.pack("<QdddB", count, last, lo, hi, zone).hex()}
BELOW, WITHIN, ABOVE = 0, 1, 2
def r(device, ms, ts="t", kind="flowmeter"):
    body = ",".join(f'{json.dumps(k, ensure_ascii=False)}:{v}' for k, v in ms)
    return '{"device":%s,"ts":"%s","kind":"%s","measurements":{%s}}' % (json.dumps(device, ensure_ascii=False), ts, kind, body)
def ev(value, expect, **kw):
    d = {"value": value}; d.update(kw); d["expect"] = expect; return d
def alert(device, m, a, value, limit, prev, ts="t"):
    return {"key": device, "value": '{"device":%s,"ts":"%s","measurement":"%s","alert":"%s","value":%s,"limit":%s,"previous":%s}' % (json.dumps(device, ensure_ascii=False), ts, m, a, value, limit, prev)}
def ok(*outs): return {"ok": list(outs)}
def inv(m): return {"invalid": m}
cases = []
def case(name, batches, state=None, **kw):
    c = {"name": name}; c.update(kw); c["batches"] = batches
    if state is not None: c["state"] = state
    cases.append(c)
F = "flow_l_s"
case("crossing, staying out, coming back and jumps, with state carried across batches", [
    [ev(r("pipe", [(F, "100")]), ok())],
    [ev(r("pipe", [(F, "24.5")]), ok(alert("pipe", F, "below-min", "24.5", "50", "100"), alert("pipe", F, "jump", "24.5", "30", "100")))],
    [ev(r("pipe", [(F, "25")]), ok()),
     ev(r("pipe", [(F, "60")]), ok(alert("pipe", F, "back-in-range", "60", "50", "25"), alert("pipe", F, "jump", "60", "30", "25")))],
], state={"pipe/flow_l_s": track(4, 60.0, 24.5, 100.0, WITHIN)},
   config={"flow_l_s.min": "50", "flow_l_s.delta": "30"})
case("above max and back, two measurements in name order, two devices", [
    [ev(r("a", [("temperature_c", "30"), ("temperature_f", "86")], kind="thermometer"),
        ok(alert("a", "temperature_c", "above-max", "30", "25.5", "null"))),
     ev(r("b", [("temperature_c", "10")], kind="thermometer"), ok()),
     ev(r("a", [("temperature_f", "50"), ("temperature_c", "10")], kind="thermometer"),
        ok(alert("a", "temperature_c", "back-in-range", "10", "25.5", "30")))],
], state={"a/temperature_c": track(2, 10.0, 10.0, 30.0, WITHIN),
          "a/temperature_f": track(2, 50.0, 50.0, 86.0, WITHIN),
          "b/temperature_c": track(1, 10.0, 10.0, 10.0, WITHIN)},
   config={"temperature_c.max": "25.5", "temperature_c.min": "-5"})
case("a first reading outside the bounds raises an alert with no previous value", [
    [ev(r("p", [(F, "1e-7")]), ok(alert("p", F, "below-min", "1e-7", "0.5", "null")))],
    [ev(r("p", [(F, "-3")]), ok(alert("p", F, "jump", "-3", "0.25", "1e-7")))],
], state={"p/flow_l_s": track(2, -3.0, -3.0, 1e-7, BELOW)},
   config={"flow_l_s.min": "0.5", "flow_l_s.delta": "0.25"})
case("null measurements are skipped and keep no state; no rules means no alerts", [
    [ev(r("g", [("glucose_mg_dl", "null"), ("isig_na", "12.5")], kind="glucose-monitor"), ok()),
     ev(r("g", [("isig_na", "null")], kind="glucose-monitor"), ok()),
     ev(r("g", [("isig_na", "-1")], kind="glucose-monitor"), ok())],
], state={"g/isig_na": track(2, -1.0, -1.0, 12.5, WITHIN)})
case("tombstones, values that are not JSON and readings that are not enriched are invalid", [
    [ev(None, inv("tombstone: a reading needs a value")),
     ev("", inv("value is not JSON")),
     ev("{", inv("value is not JSON")),
     ev({"hex": "7bff7d"}, inv("value is not JSON")),
     ev("[1]", inv('field "measurements" is missing or not an object')),
     ev('{"device":"d","ts":"t","kind":"k"}', inv('field "measurements" is missing or not an object')),
     ev('{"device":"d","ts":"t","kind":"k","measurements":[]}', inv('field "measurements" is missing or not an object')),
     ev('{"ts":"t","kind":"k","measurements":{}}', inv('field "device" is missing or not a string')),
     ev('{"device":"d","kind":"k","measurements":{}}', inv('field "ts" is missing or not a string')),
     ev('{"device":"d","ts":"t","measurements":{"flow_l_s":1}}', inv('field "kind" is missing or not a string')),
     ev('{"device":"d","ts":"t","kind":"k","measurements":{"flow_l_s":"7"}}', ok())],
], state={})
case("non-ASCII devices, headers that are not UTF-8 and a key that is not UTF-8", [
    [ev(r("Bøje 🌊", [(F, "10")]), ok(alert("Bøje 🌊", F, "above-max", "10", "1", "null")),
        key={"hex": "ff"}, headers=[["h", {"hex": "fffe"}], ["h", {"hex": "00"}]])],
], state={"Bøje 🌊/flow_l_s": track(1, 10.0, 10.0, 10.0, ABOVE)}, config={"flow_l_s.max": "1"})
case("config: unknown key", [], config={"flow_l_s": "1"},
     init_error='unknown config key "flow_l_s" (expected <measurement>.min, .max or .delta)')
case("config: unknown bound", [], config={"flow_l_s.avg": "1"},
     init_error='unknown config key "flow_l_s.avg" (expected <measurement>.min, .max or .delta)')
case("config: not a number", [], config={"flow_l_s.min": "low"},
     init_error='config flow_l_s.min = "low" is not a number')
case("config: infinity is not a number", [], config={"flow_l_s.max": "inf"},
     init_error='config flow_l_s.max = "inf" is not a number')
case("config: delta must be above 0", [], config={"flow_l_s.delta": "0"},
     init_error='config flow_l_s.delta = "0" must be above 0')
case("config: min above max", [], config={"flow_l_s.max": "2", "flow_l_s.min": "3.5"},
     init_error="flow_l_s.min (3.5) is above flow_l_s.max (2)")
doc = {"processor": "threshold",
       "about": "Conformance cases for threshold (plugins/rust/threshold is the specification). Format: README.md beside this file.",
       "cases": cases}
open("threshold.json", "w").write(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
