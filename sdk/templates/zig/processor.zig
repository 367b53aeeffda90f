//! {{name}}: upper-cases each value and counts the events it has seen.
//! `make` builds {{name}}.wasm; `make test` runs the tests below, natively.

const std = @import("std");
const tw = @import("tidewater");

fn process(event: *const tw.Event, out: *tw.Outputs) tw.Error!void {
    const value = event.value orelse return tw.invalid("value is a tombstone", .{});
    var seen: u64 = 0;
    if (try tw.state.get("seen")) |before| {
        defer tw.allocator.free(before);
        seen = std.fmt.parseInt(u64, before, 10) catch 0;
    }
    seen += 1;
    var count_buf: [20]u8 = undefined;
    const count = std.fmt.bufPrint(&count_buf, "{d}", .{seen}) catch unreachable;
    try tw.state.set("seen", count);
    tw.log(.info, "event {d}", .{seen});

    const upper = try tw.allocator.alloc(u8, value.len);
    _ = std.ascii.upperString(upper, value);
    try out.emitOwned(event.key, upper); // takes `upper`
    try out.addHeader("seen", count);
}

comptime {
    tw.exportProcessor(process, null);
}

test "shouts and counts" {
    tw.state.clear();
    var first: tw.Outputs = .{};
    defer first.deinit();
    try process(&.{ .value = "hi" }, &first);
    try std.testing.expectEqualStrings("HI", first.get(0).value.?);
    var second: tw.Outputs = .{};
    defer second.deinit();
    try process(&.{ .value = "yo" }, &second);
    try std.testing.expectEqualStrings("2", second.get(0).header(0).value());
    var third: tw.Outputs = .{};
    defer third.deinit();
    try std.testing.expectError(error.Invalid, process(&.{ .value = null }, &third));
}
