//! threshold in Zig: the port of plugins/rust/threshold (its crate docs are
//! the specification). Built by `make plugins`; `zig test` runs the tests below.

const std = @import("std");
const tw = @import("tidewater");
const readings = @import("readings");

const gpa = tw.allocator;

const Zone = enum(u8) { below = 0, within = 1, above = 2 };

const Rule = struct { min: ?f64 = null, max: ?f64 = null, delta: ?f64 = null };

/// Measurement name to its bounds, from the config.
var rules: std.StringArrayHashMapUnmanaged(Rule) = .empty;

fn unknown(key: []const u8) tw.InitError {
    return tw.refuse("unknown config key \"{s}\" (expected <measurement>.min, .max or .delta)", .{key});
}

fn init(config: tw.Config) tw.InitError!void {
    for (config.entries) |entry| {
        const key = entry.key();
        const value = entry.value();
        const dot = std.mem.lastIndexOfScalar(u8, key, '.') orelse return unknown(key);
        const x = readings.parseF64Strict(value) orelse return tw.refuse("config {s} = \"{s}\" is not a number", .{ key, value });
        const slot = try rules.getOrPut(gpa, key[0..dot]);
        if (!slot.found_existing) {
            slot.key_ptr.* = try gpa.dupe(u8, key[0..dot]);
            slot.value_ptr.* = .{};
        }
        const what = key[dot + 1 ..];
        if (std.mem.eql(u8, what, "min")) {
            slot.value_ptr.min = x;
        } else if (std.mem.eql(u8, what, "max")) {
            slot.value_ptr.max = x;
        } else if (std.mem.eql(u8, what, "delta")) {
            if (!(x > 0)) return tw.refuse("config {s} = \"{s}\" must be above 0", .{ key, value });
            slot.value_ptr.delta = x;
        } else return unknown(key);
    }
    // The first offending measurement in byte order names the refusal.
    const names = try gpa.dupe([]const u8, rules.keys());
    defer gpa.free(names);
    std.mem.sort([]const u8, names, {}, readings.byteLess);
    for (names) |m| {
        const r = rules.get(m).?;
        const lo = r.min orelse continue;
        const hi = r.max orelse continue;
        if (lo > hi) {
            var a: std.ArrayList(u8) = .empty;
            defer a.deinit(gpa);
            var b: std.ArrayList(u8) = .empty;
            defer b.deinit(gpa);
            try readings.writeNumber(&a, gpa, lo);
            try readings.writeNumber(&b, gpa, hi);
            return tw.refuse("{s}.min ({s}) is above {s}.max ({s})", .{ m, a.items, m, b.items });
        }
    }
}

/// What the state keeps per device and measurement: 33 bytes, little-endian.
const Track = struct {
    count: u64,
    last: f64,
    min: f64,
    max: f64,
    zone: Zone,

    fn encode(t: Track) [33]u8 {
        var b: [33]u8 = undefined;
        std.mem.writeInt(u64, b[0..8], t.count, .little);
        std.mem.writeInt(u64, b[8..16], @bitCast(t.last), .little);
        std.mem.writeInt(u64, b[16..24], @bitCast(t.min), .little);
        std.mem.writeInt(u64, b[24..32], @bitCast(t.max), .little);
        b[32] = @intFromEnum(t.zone);
        return b;
    }

    fn decode(b: []const u8) ?Track {
        if (b.len < 33 or b[32] > 2) return null;
        return .{
            .count = std.mem.readInt(u64, b[0..8], .little),
            .last = @bitCast(std.mem.readInt(u64, b[8..16], .little)),
            .min = @bitCast(std.mem.readInt(u64, b[16..24], .little)),
            .max = @bitCast(std.mem.readInt(u64, b[24..32], .little)),
            .zone = @enumFromInt(b[32]),
        };
    }
};

const Reading = struct { device: []const u8, ts: []const u8 };

fn alert(out: *tw.Outputs, r: Reading, measurement: []const u8, kind: []const u8, value: f64, limit: f64, previous: ?f64) !void {
    var b: std.ArrayList(u8) = .empty;
    errdefer b.deinit(gpa);
    try b.appendSlice(gpa, "{\"device\":");
    try readings.writeString(&b, gpa, r.device);
    try b.appendSlice(gpa, ",\"ts\":");
    try readings.writeString(&b, gpa, r.ts);
    try b.appendSlice(gpa, ",\"measurement\":");
    try readings.writeString(&b, gpa, measurement);
    try b.appendSlice(gpa, ",\"alert\":");
    try readings.writeString(&b, gpa, kind);
    try b.appendSlice(gpa, ",\"value\":");
    try readings.writeNumber(&b, gpa, value);
    try b.appendSlice(gpa, ",\"limit\":");
    try readings.writeNumber(&b, gpa, limit);
    try b.appendSlice(gpa, ",\"previous\":");
    try readings.writeNumber(&b, gpa, previous);
    try b.append(gpa, '}');
    try out.emitOwned(r.device, try b.toOwnedSlice(gpa));
}

fn stringField(obj: []const readings.Member, comptime name: []const u8) tw.Error![]const u8 {
    return switch (readings.get(obj, name) orelse .null) {
        .string => |s| s,
        else => tw.invalid("field \"" ++ name ++ "\" is missing or not a string", .{}),
    };
}

fn watch(arena: std.mem.Allocator, obj: []const readings.Member, out: *tw.Outputs) tw.Error!void {
    const ms = switch (readings.get(obj, "measurements") orelse .null) {
        .object => |o| o,
        else => return tw.invalid("field \"measurements\" is missing or not an object", .{}),
    };
    const r: Reading = .{ .device = try stringField(obj, "device"), .ts = try stringField(obj, "ts") };
    _ = try stringField(obj, "kind");

    // Measurements in byte order; of repeated names the last one counts.
    var sorted: std.ArrayList(readings.Member) = .empty;
    for (ms, 0..) |m, i| {
        const repeated = for (ms[i + 1 ..]) |later| {
            if (std.mem.eql(u8, later.key, m.key)) break true;
        } else false;
        if (!repeated) try sorted.append(arena, m);
    }
    std.mem.sort(readings.Member, sorted.items, {}, struct {
        fn less(_: void, a: readings.Member, b: readings.Member) bool {
            return std.mem.lessThan(u8, a.key, b.key);
        }
    }.less);

    for (sorted.items) |m| {
        const x = switch (m.value) {
            .number => |n| n,
            else => continue,
        };
        const rule = rules.get(m.key) orelse Rule{};
        const key = try std.mem.concat(arena, u8, &.{ r.device, "/", m.key });
        const raw = try tw.state.get(key);
        const before = if (raw) |b| Track.decode(b) else null;
        if (raw) |b| gpa.free(b);
        const now: Zone = if (rule.min != null and x < rule.min.?) .below else if (rule.max != null and x > rule.max.?) .above else .within;
        const was: Zone = if (before) |t| t.zone else .within;
        const previous: ?f64 = if (before) |t| t.last else null;
        if (now != was) {
            const kind: []const u8, const limit: ?f64 = switch (now) {
                .below => .{ "below-min", rule.min },
                .above => .{ "above-max", rule.max },
                .within => if (was == .below) .{ "back-in-range", rule.min } else .{ "back-in-range", rule.max },
            };
            if (limit) |l| try alert(out, r, m.key, kind, x, l, previous);
        }
        if (rule.delta) |d| if (previous) |p| if (@abs(x - p) > d) try alert(out, r, m.key, "jump", x, d, p);
        const t: Track = if (before) |b|
            .{ .count = b.count + 1, .last = x, .min = @min(b.min, x), .max = @max(b.max, x), .zone = now }
        else
            .{ .count = 1, .last = x, .min = x, .max = x, .zone = now };
        try tw.state.set(key, &t.encode());
    }
}

var arena_state = std.heap.ArenaAllocator.init(gpa);

fn process(event: *const tw.Event, out: *tw.Outputs) tw.Error!void {
    defer _ = arena_state.reset(.retain_capacity);
    const arena = arena_state.allocator();
    const value = event.value orelse return tw.invalid("tombstone: a reading needs a value", .{});
    const parsed = readings.parse(arena, value) catch |e| switch (e) {
        error.NotJson => return tw.invalid("value is not JSON", .{}),
        error.OutOfMemory => return error.OutOfMemory,
    };
    const obj: []const readings.Member = switch (parsed) {
        .object => |o| o,
        else => &.{},
    };
    return watch(arena, obj, out);
}

comptime {
    tw.exportProcessor(process, init);
}

fn reading(flow: []const u8) tw.Event {
    const S = struct {
        var buf: [256]u8 = undefined;
    };
    const v = std.fmt.bufPrint(&S.buf, "{{\"device\":\"pipe\",\"ts\":\"t\",\"kind\":\"flowmeter\",\"measurements\":{{\"flow_l_s\":{s}}}}}", .{flow}) catch unreachable;
    return .{ .topic = "readings-enriched", .value = v };
}

test "alerts on crossing and jump, and keeps state" {
    tw.state.clear();
    try init(.{ .entries = &.{ .init("flow_l_s.min", "50"), .init("flow_l_s.delta", "30") } });
    var first: tw.Outputs = .{};
    defer first.deinit();
    try process(&reading("100"), &first);
    try std.testing.expectEqual(@as(usize, 0), first.count());
    var second: tw.Outputs = .{};
    defer second.deinit();
    try process(&reading("24.5"), &second);
    try std.testing.expectEqual(@as(usize, 2), second.count());
    try std.testing.expectEqualStrings(
        "{\"device\":\"pipe\",\"ts\":\"t\",\"measurement\":\"flow_l_s\",\"alert\":\"below-min\",\"value\":24.5,\"limit\":50,\"previous\":100}",
        second.get(0).value.?,
    );
    try std.testing.expectEqualStrings(
        "{\"device\":\"pipe\",\"ts\":\"t\",\"measurement\":\"flow_l_s\",\"alert\":\"jump\",\"value\":24.5,\"limit\":30,\"previous\":100}",
        second.get(1).value.?,
    );
    const t = (try tw.state.get("pipe/flow_l_s")).?;
    defer gpa.free(t);
    try std.testing.expectEqual(@as(usize, 33), t.len);
    try std.testing.expectEqual(@as(u8, 0), t[32]); // below
}

test "a bad config is refused with a message" {
    try std.testing.expectError(error.Refused, init(.{ .entries = &.{.init("flow_l_s", "1")} }));
    try std.testing.expectEqualStrings(
        "unknown config key \"flow_l_s\" (expected <measurement>.min, .max or .delta)",
        tw.lastMessage(),
    );
}
