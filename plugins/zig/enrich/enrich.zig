//! enrich in Zig: the port of plugins/rust/enrich (its crate docs are the
//! specification). Built by `make plugins`; `zig test` runs the tests below.

const std = @import("std");
const tw = @import("tidewater");
const readings = @import("readings");

const gpa = tw.allocator;

const built_in = [_][2][]const u8{
    .{ "temperature (celsius)", "temperature_c" },
    .{ "Water flow [l/s]", "flow_l_s" },
    .{ "glucose", "glucose_mg_dl" },
    .{ "isig", "isig_na" },
};

/// Column renames (`field.<column>`) and device kinds (`kind.<device>`), from the config.
var fields: std.StringArrayHashMapUnmanaged([]const u8) = .empty;
var kinds: std.StringArrayHashMapUnmanaged([]const u8) = .empty;

fn init(config: tw.Config) tw.InitError!void {
    for (config.entries) |entry| {
        const key = entry.key();
        const table, const name = if (std.mem.startsWith(u8, key, "field."))
            .{ &fields, key[6..] }
        else if (std.mem.startsWith(u8, key, "kind."))
            .{ &kinds, key[5..] }
        else
            return tw.refuse("unknown config key \"{s}\" (expected field.<column> or kind.<device>)", .{key});
        if (name.len == 0 or entry.value().len == 0) return tw.refuse("config key \"{s}\" needs a name and a value", .{key});
        // A later entry for the same name replaces the earlier one.
        try table.put(gpa, try gpa.dupe(u8, name), try gpa.dupe(u8, entry.value()));
    }
}

const Measurement = struct { name: []const u8, value: ?f64 };

/// The measurements, each name once (a later one replaces an earlier one in place).
const Measurements = struct {
    list: std.ArrayList(Measurement) = .empty,

    fn find(m: *Measurements, name: []const u8) ?*Measurement {
        for (m.list.items) |*x| if (std.mem.eql(u8, x.name, name)) return x;
        return null;
    }
    fn set(m: *Measurements, arena: std.mem.Allocator, name: []const u8, value: ?f64) !void {
        if (m.find(name)) |x| x.value = value else try m.list.append(arena, .{ .name = name, .value = value });
    }
    fn has(m: *Measurements, name: []const u8) bool {
        return m.find(name) != null;
    }
    fn byName(_: void, a: Measurement, b: Measurement) bool {
        return std.mem.lessThan(u8, a.name, b.name);
    }
};

fn rename(column: []const u8) []const u8 {
    if (fields.get(column)) |to| return to;
    for (built_in) |b| if (std.mem.eql(u8, b[0], column)) return b[1];
    return column;
}

fn kindOf(m: *Measurements) []const u8 {
    if (m.has("flow_l_s")) return "flowmeter";
    if (m.has("glucose_mg_dl")) return "glucose-monitor";
    if (m.has("co2_ppm") or m.has("humidity_pct") or m.has("light_lux")) return "room-sensor";
    if (m.has("temperature_c")) return "thermometer";
    return "unknown";
}

fn enrich(arena: std.mem.Allocator, obj: []const readings.Member, out: *tw.Outputs) tw.Error!void {
    const device = switch (readings.get(obj, "device") orelse .null) {
        .string => |s| s,
        else => return tw.invalid("field \"device\" is missing or not a string", .{}),
    };
    const ts = switch (readings.get(obj, "ts") orelse .null) {
        .string => |s| s,
        else => return tw.invalid("field \"ts\" is missing or not a string", .{}),
    };
    // Columns in byte order; of repeated keys the last one counts.
    var columns: std.ArrayList(readings.Member) = .empty;
    for (obj, 0..) |member, i| {
        if (std.mem.eql(u8, member.key, "device") or std.mem.eql(u8, member.key, "ts")) continue;
        const repeated = for (obj[i + 1 ..]) |later| {
            if (std.mem.eql(u8, later.key, member.key)) break true;
        } else false;
        if (!repeated) try columns.append(arena, member);
    }
    std.mem.sort(readings.Member, columns.items, {}, struct {
        fn less(_: void, a: readings.Member, b: readings.Member) bool {
            return std.mem.lessThan(u8, a.key, b.key);
        }
    }.less);
    var m: Measurements = .{};
    for (columns.items) |col| {
        const x: ?f64 = switch (col.value) {
            .number => |n| n,
            .string => |s| readings.parseNumberText(s),
            else => null,
        };
        try m.set(arena, rename(col.key), x);
    }
    const any = for (m.list.items) |x| {
        if (x.value != null) break true;
    } else false;
    if (!any) return tw.invalid("reading from {s} at {s} has no measurement that parses", .{ device, ts });
    if (m.find("temperature_c")) |c| {
        const f = if (c.value) |v| v * 9.0 / 5.0 + 32.0 else null;
        try m.set(arena, "temperature_f", f);
    }
    if (m.find("flow_l_s")) |l| {
        const f = if (l.value) |v| v * 3.6 else null;
        try m.set(arena, "flow_m3_h", f);
    }
    const kind = kinds.get(device) orelse kindOf(&m);
    std.mem.sort(Measurement, m.list.items, {}, Measurements.byName);

    var b: std.ArrayList(u8) = .empty;
    errdefer b.deinit(gpa);
    try b.appendSlice(gpa, "{\"device\":");
    try readings.writeString(&b, gpa, device);
    try b.appendSlice(gpa, ",\"ts\":");
    try readings.writeString(&b, gpa, ts);
    try b.appendSlice(gpa, ",\"kind\":");
    try readings.writeString(&b, gpa, kind);
    try b.appendSlice(gpa, ",\"measurements\":{");
    for (m.list.items, 0..) |x, i| {
        if (i > 0) try b.append(gpa, ',');
        try readings.writeString(&b, gpa, x.name);
        try b.append(gpa, ':');
        try readings.writeNumber(&b, gpa, x.value);
    }
    try b.appendSlice(gpa, "}}");
    try out.emitOwned(device, try b.toOwnedSlice(gpa));
}

/// One arena for each event's parse, reset (its memory kept) after the event.
var arena_state = std.heap.ArenaAllocator.init(gpa);

fn process(event: *const tw.Event, out: *tw.Outputs) tw.Error!void {
    defer _ = arena_state.reset(.retain_capacity);
    const arena = arena_state.allocator();
    const value = event.value orelse return tw.invalid("tombstone: a reading needs a value", .{});
    const parsed = readings.parse(arena, value) catch |e| switch (e) {
        error.NotJson => return tw.invalid("value is not JSON", .{}),
        error.OutOfMemory => return error.OutOfMemory,
    };
    const obj = switch (parsed) {
        .object => |o| o,
        else => return tw.invalid("value is not a JSON object", .{}),
    };
    return enrich(arena, obj, out);
}

comptime {
    tw.exportProcessor(process, init);
}

fn run(value: ?[]const u8) !tw.Outputs {
    var out: tw.Outputs = .{};
    errdefer out.deinit();
    try process(&.{ .topic = "sensor-readings", .value = value }, &out);
    return out;
}

test "converts celsius and keys by device" {
    var out = try run("{\"device\":\"buoy\",\"ts\":\"2016-02-15T00:00:00Z\",\"temperature (celsius)\":4.929}");
    defer out.deinit();
    try std.testing.expectEqual(@as(usize, 1), out.count());
    try std.testing.expectEqualStrings("buoy", out.get(0).key.?);
    try std.testing.expectEqualStrings(
        "{\"device\":\"buoy\",\"ts\":\"2016-02-15T00:00:00Z\",\"kind\":\"thermometer\",\"measurements\":{\"temperature_c\":4.929,\"temperature_f\":40.8722}}",
        out.get(0).value.?,
    );
}

test "a tombstone and a value that is not JSON are invalid" {
    try std.testing.expectError(error.Invalid, run(null));
    try std.testing.expectEqualStrings("tombstone: a reading needs a value", tw.lastMessage());
    try std.testing.expectError(error.Invalid, run("not json"));
    try std.testing.expectEqualStrings("value is not JSON", tw.lastMessage());
}

test "names sort in UTF-8 byte order" {
    var out = try run("{\"device\":\"d\",\"ts\":\"t\",\"\u{e000}\":1,\"\u{1f30a}\":2}");
    defer out.deinit();
    try std.testing.expectEqualStrings(
        "{\"device\":\"d\",\"ts\":\"t\",\"kind\":\"unknown\",\"measurements\":{\"\u{e000}\":1,\"\u{1f30a}\":2}}",
        out.get(0).value.?,
    );
}
