//! tidewater.zig: write tidewater stream processors in Zig.
//!
//! A processor is one function called once per event, exported with one line:
//!
//!     const tw = @import("tidewater");
//!
//!     fn process(event: *const tw.Event, out: *tw.Outputs) tw.Error!void {
//!         const value = event.value orelse return tw.invalid("tombstone: {s}", .{"a value is needed"});
//!         try out.emit(event.key, value); // copied: `value` stays borrowed
//!     }
//!
//!     comptime {
//!         tw.exportProcessor(process, null); // or (process, init)
//!     }
//!
//! The SDK receives each batch from the host (the tidewater:processor@0.1.0
//! WIT world, through the C bindings wit-bindgen generates: `processor.c`,
//! translated to Zig by `zig translate-c` as the module `processor_c`), calls
//! your function for each event in order and returns one result per event:
//! the outputs emitted, or the error returned.
//!
//! - Errors: return `tw.invalid(fmt, args)` (the host dead-letters the
//!   event), `tw.transient(...)` (retried with backoff) or `tw.fatal(...)`
//!   (the processor is paused); each records its message and returns the
//!   matching error of `tw.Error`. When an event fails, the outputs it
//!   emitted are dropped. `error.OutOfMemory` traps the component (as a panic
//!   in Rust does: the host discards the instance and dead-letters the event).
//! - Ownership: everything the SDK hands you (event fields, config entries)
//!   is borrowed for the duration of the call; `Outputs.emit` and the state
//!   functions copy what you give them; `Outputs.emitOwned` takes a buffer
//!   from `tw.allocator` without a copy.
//! - Memory: `tw.allocator` is libc's malloc inside the component (the
//!   generated post-return frees the outputs with `free`).
//!
//! Natively (`zig test`), nothing is imported from the host: `state` is an
//! in-memory map and `log` writes to stderr, so a processor's unit tests run
//! as plain Zig.

const std = @import("std");
const builtin = @import("builtin");

/// True inside the component (wasm32-wasi); false in native unit tests.
pub const in_component = builtin.cpu.arch == .wasm32;

/// The generated C bindings, translated (only inside the component).
const c = if (in_component) @import("processor_c") else struct {};

/// The allocator for everything handed to the host: malloc inside the
/// component (the bindings free with `free`), the general-purpose allocator natively.
pub const allocator: std.mem.Allocator = if (in_component) std.heap.c_allocator else std.heap.smp_allocator;

/// Why one event could not be processed. Return it with `invalid`, `transient` or `fatal`.
pub const Error = error{
    /// A passing failure: the host retries the event with backoff, then applies `on_error`.
    Transient,
    /// The event is bad: the host dead-letters it with the message.
    Invalid,
    /// The processor cannot go on: the host pauses it (others go on); nothing of the batch is committed.
    Fatal,
    /// Memory ran out: the component traps (the host dead-letters the event that caused it).
    OutOfMemory,
};

/// Why init refused the config. Return it with `refuse`.
pub const InitError = error{
    /// The config is refused with the recorded message.
    Refused,
    /// Memory ran out: the component traps.
    OutOfMemory,
};

/// The last error's message, formatted by `invalid`, `transient`, `fatal` or `refuse`.
var pending: std.ArrayList(u8) = .empty;

fn record(comptime fmt: []const u8, args: anytype) void {
    pending.clearRetainingCapacity();
    pending.print(allocator, fmt, args) catch @panic("out of memory");
}

/// Records the message (`std.fmt` syntax) and returns `error.Invalid`: the host dead-letters the event.
pub fn invalid(comptime fmt: []const u8, args: anytype) Error {
    record(fmt, args);
    return error.Invalid;
}

/// Records the message and returns `error.Transient`: the host retries the event with backoff.
pub fn transient(comptime fmt: []const u8, args: anytype) Error {
    record(fmt, args);
    return error.Transient;
}

/// Records the message and returns `error.Fatal`: the host pauses this processor.
pub fn fatal(comptime fmt: []const u8, args: anytype) Error {
    record(fmt, args);
    return error.Fatal;
}

/// Records why init refuses the config and returns `error.Refused`.
pub fn refuse(comptime fmt: []const u8, args: anytype) InitError {
    record(fmt, args);
    return error.Refused;
}

/// The message recorded by the last `invalid`, `transient`, `fatal` or `refuse` (for unit tests).
pub fn lastMessage() []const u8 {
    return pending.items;
}

/// The message the host gets for an event that failed with `e`: the one
/// recorded by `invalid`, `transient` or `fatal`, or, for an error returned
/// without one (`return error.Invalid;`), `defaultMessage(e)`.
pub fn failureMessage(e: Error) []const u8 {
    return if (pending.items.len > 0) pending.items else defaultMessage(e);
}

/// The message of an error returned without one (`return error.Invalid;`
/// rather than `return tw.invalid(...)`): it names the error, e.g.
/// "error.Invalid (returned without a message: use tw.invalid(...) to give one)".
pub fn defaultMessage(e: Error) []const u8 {
    return switch (e) {
        error.Transient => "error.Transient (returned without a message: use tw.transient(...) to give one)",
        error.Invalid => "error.Invalid (returned without a message: use tw.invalid(...) to give one)",
        error.Fatal => "error.Fatal (returned without a message: use tw.fatal(...) to give one)",
        error.OutOfMemory => "error.OutOfMemory",
    };
}

/// A header: a name (UTF-8) and a value (any bytes). Laid out as the
/// canonical ABI's `tuple<string, list<u8>>`, so the host's headers are read in place.
pub const Header = extern struct {
    name_ptr: [*]const u8,
    name_len: usize,
    value_ptr: [*]const u8,
    value_len: usize,

    /// A header over borrowed bytes.
    pub fn init(name_: []const u8, value_: []const u8) Header {
        return .{ .name_ptr = name_.ptr, .name_len = name_.len, .value_ptr = value_.ptr, .value_len = value_.len };
    }
    /// The header's name.
    pub fn name(h: Header) []const u8 {
        return h.name_ptr[0..h.name_len];
    }
    /// The header's value.
    pub fn value(h: Header) []const u8 {
        return h.value_ptr[0..h.value_len];
    }
};

/// One record read from an input topic; every slice is borrowed for the call.
pub const Event = struct {
    /// The topic the record was read from.
    topic: []const u8 = "",
    /// The partition of that topic.
    partition: u32 = 0,
    /// The record's offset in its partition.
    offset: u64 = 0,
    /// The record's timestamp, in milliseconds since the Unix epoch (UTC).
    timestamp_ms: i64 = 0,
    /// The record key; null when it has none.
    key: ?[]const u8 = null,
    /// The record value; null is a tombstone, distinct from an empty value.
    value: ?[]const u8 = null,
    /// The headers in the order they were written; names may repeat.
    headers: []const Header = &.{},

    /// The value of the first header called `name`, or null.
    pub fn header(e: *const Event, name: []const u8) ?[]const u8 {
        for (e.headers) |h| if (std.mem.eql(u8, h.name(), name)) return h.value();
        return null;
    }
};

/// An owned byte list as the canonical ABI lays out `option<list<u8>>` (and `option<string>`).
const OptionList = extern struct {
    is_some: bool = false,
    ptr: ?[*]u8 = null,
    len: usize = 0,

    fn some(bytes: []u8) OptionList {
        return .{ .is_some = true, .ptr = if (bytes.len > 0) bytes.ptr else null, .len = bytes.len };
    }
    fn slice(o: OptionList) ?[]const u8 {
        if (!o.is_some) return null;
        return if (o.ptr) |p| p[0..o.len] else "";
    }
    fn free(o: *OptionList) void {
        if (o.len > 0) allocator.free(o.ptr.?[0..o.len]);
        o.* = .{};
    }
};

const OwnedHeader = extern struct {
    name_ptr: ?[*]u8,
    name_len: usize,
    value_ptr: ?[*]u8,
    value_len: usize,
};

/// One output as the canonical ABI lays out the WIT record `output`; the
/// bindings' post-return frees its bytes with `free`.
const RawOutput = extern struct {
    topic: OptionList = .{},
    key: OptionList = .{},
    value: OptionList = .{},
    headers_ptr: ?[*]OwnedHeader = null,
    headers_len: usize = 0,

    fn free(o: *RawOutput) void {
        o.topic.free();
        o.key.free();
        o.value.free();
        if (o.headers_ptr) |hs| {
            for (hs[0..o.headers_len]) |h| {
                if (h.name_len > 0) allocator.free(h.name_ptr.?[0..h.name_len]);
                if (h.value_len > 0) allocator.free(h.value_ptr.?[0..h.value_len]);
            }
            allocator.free(hs[0..o.headers_len]);
        }
    }
};

comptime {
    if (in_component) {
        std.debug.assert(@sizeOf(RawOutput) == @sizeOf(c.processor_output_t));
        std.debug.assert(@sizeOf(Header) == @sizeOf(c.tidewater_processor_types_header_t));
        std.debug.assert(@sizeOf(OwnedHeader) == @sizeOf(c.tidewater_processor_types_header_t));
        std.debug.assert(@sizeOf(ConfigEntry) == @sizeOf(c.processor_tuple2_string_string_t));
    }
}

fn dupe(bytes: []const u8) error{OutOfMemory}![]u8 {
    return allocator.dupe(u8, bytes);
}

/// One of an event's outputs, as read back in unit tests.
pub const OutputView = struct {
    topic: ?[]const u8,
    key: ?[]const u8,
    value: ?[]const u8,
    raw: *const RawOutput,

    /// Header `i`: name and value.
    pub fn header(o: OutputView, i: usize) Header {
        const h = o.raw.headers_ptr.?[i];
        return .{
            .name_ptr = if (h.name_ptr) |p| p else "".ptr,
            .name_len = h.name_len,
            .value_ptr = if (h.value_ptr) |p| p else "".ptr,
            .value_len = h.value_len,
        };
    }
    /// How many headers the output has.
    pub fn headerCount(o: OutputView) usize {
        return o.raw.headers_len;
    }
};

/// Where an event's outputs go. Each `emit` adds one record; `setTopic` and
/// `addHeader` change the last one emitted.
pub const Outputs = struct {
    list: std.ArrayList(RawOutput) = .empty,

    /// Emits an output to the processor's output topic; `key` null means no
    /// key, `value` null a tombstone. Both are copied.
    pub fn emit(out: *Outputs, key: ?[]const u8, value: ?[]const u8) error{OutOfMemory}!void {
        var o: RawOutput = .{};
        errdefer o.free();
        if (key) |k| o.key = .some(try dupe(k));
        if (value) |v| o.value = .some(try dupe(v));
        try out.list.append(allocator, o);
    }

    /// Emits an output whose value is `value`, taken without a copy: it must
    /// come from `tw.allocator` and is the SDK's from here on (freed on error too).
    pub fn emitOwned(out: *Outputs, key: ?[]const u8, value: []u8) error{OutOfMemory}!void {
        var o: RawOutput = .{ .value = .some(value) };
        errdefer o.free();
        if (key) |k| o.key = .some(try dupe(k));
        try out.list.append(allocator, o);
    }

    /// Sends the last emitted output to `topic` instead of the processor's output (copied).
    pub fn setTopic(out: *Outputs, topic: []const u8) error{OutOfMemory}!void {
        const o = out.last() orelse return;
        o.topic.free();
        o.topic = .some(try dupe(topic));
    }

    /// Appends a header to the last emitted output (both copied).
    pub fn addHeader(out: *Outputs, name: []const u8, value: []const u8) error{OutOfMemory}!void {
        const o = out.last() orelse return;
        const n = try dupe(name);
        errdefer allocator.free(n);
        const v = try dupe(value);
        errdefer allocator.free(v);
        const old: []OwnedHeader = if (o.headers_ptr) |p| p[0..o.headers_len] else &.{};
        const hs = try allocator.realloc(old, old.len + 1);
        hs[old.len] = .{
            .name_ptr = if (n.len > 0) n.ptr else null,
            .name_len = n.len,
            .value_ptr = if (v.len > 0) v.ptr else null,
            .value_len = v.len,
        };
        o.headers_ptr = hs.ptr;
        o.headers_len = hs.len;
    }

    /// How many outputs were emitted.
    pub fn count(out: *const Outputs) usize {
        return out.list.items.len;
    }

    /// Output `i`, for reading back in unit tests.
    pub fn get(out: *const Outputs, i: usize) OutputView {
        const o = &out.list.items[i];
        return .{ .topic = o.topic.slice(), .key = o.key.slice(), .value = o.value.slice(), .raw = o };
    }

    /// Frees every output (the SDK does, after a failed event; unit tests do).
    pub fn deinit(out: *Outputs) void {
        for (out.list.items) |*o| o.free();
        out.list.deinit(allocator);
        out.* = .{};
    }

    fn last(out: *Outputs) ?*RawOutput {
        if (out.list.items.len == 0) return null;
        return &out.list.items[out.list.items.len - 1];
    }
};

/// One entry of the processor's config: the `config` table of its TOML section, as strings.
pub const ConfigEntry = extern struct {
    key_ptr: [*]const u8,
    key_len: usize,
    value_ptr: [*]const u8,
    value_len: usize,

    /// An entry over borrowed strings.
    pub fn init(key_: []const u8, value_: []const u8) ConfigEntry {
        return .{ .key_ptr = key_.ptr, .key_len = key_.len, .value_ptr = value_.ptr, .value_len = value_.len };
    }
    /// The key.
    pub fn key(e: ConfigEntry) []const u8 {
        return e.key_ptr[0..e.key_len];
    }
    /// The value.
    pub fn value(e: ConfigEntry) []const u8 {
        return e.value_ptr[0..e.value_len];
    }
};

/// The processor's config, sorted by key; borrowed for the call of init.
pub const Config = struct {
    entries: []const ConfigEntry = &.{},

    /// The value of `key`, or null when it is not set.
    pub fn get(cfg: Config, key: []const u8) ?[]const u8 {
        for (cfg.entries) |e| if (std.mem.eql(u8, e.key(), key)) return e.value();
        return null;
    }
};

/// Per-processor key-value state kept by the host: committed with the
/// batch's outputs and position, or not at all; reads see earlier writes of
/// the batch. Natively, an in-memory map.
pub const state = struct {
    var memory: std.StringHashMapUnmanaged([]u8) = .empty;

    /// The value stored under `key`, or null; the caller owns it (free with `tw.allocator`).
    pub fn get(key: []const u8) error{OutOfMemory}!?[]u8 {
        if (in_component) {
            var k: c.processor_list_u8_t = .{ .ptr = @constCast(key.ptr), .len = key.len };
            var v: c.processor_list_u8_t = undefined;
            if (!c.tidewater_processor_state_get(&k, &v)) return null;
            if (v.len == 0) return try allocator.alloc(u8, 0);
            return v.ptr[0..v.len];
        }
        const v = memory.get(key) orelse return null;
        return try dupe(v);
    }

    /// Stores `value` under `key` (both copied).
    pub fn set(key: []const u8, value: []const u8) error{OutOfMemory}!void {
        if (in_component) {
            var k: c.processor_list_u8_t = .{ .ptr = @constCast(key.ptr), .len = key.len };
            var v: c.processor_list_u8_t = .{ .ptr = @constCast(value.ptr), .len = value.len };
            c.tidewater_processor_state_set(&k, &v);
            return;
        }
        const copy = try dupe(value);
        const entry = try memory.getOrPut(allocator, key);
        if (entry.found_existing) allocator.free(entry.value_ptr.*) else entry.key_ptr.* = try dupe(key);
        entry.value_ptr.* = copy;
    }

    /// Removes `key`; removing a missing key does nothing.
    pub fn delete(key: []const u8) void {
        if (in_component) {
            var k: c.processor_list_u8_t = .{ .ptr = @constCast(key.ptr), .len = key.len };
            c.tidewater_processor_state_delete(&k);
            return;
        }
        if (memory.fetchRemove(key)) |kv| {
            allocator.free(kv.key);
            allocator.free(kv.value);
        }
    }

    /// Empties the in-memory stand-in (unit tests only).
    pub fn clear() void {
        var it = memory.iterator();
        while (it.next()) |kv| {
            allocator.free(kv.key_ptr.*);
            allocator.free(kv.value_ptr.*);
        }
        memory.clearRetainingCapacity();
    }
};

/// Log levels, lowest first.
pub const Level = enum(u8) { trace, debug, info, warn, err };

/// Writes a line (`std.fmt` syntax) into the host's log, tagged with the
/// processor (rate-limited by the host). Natively it goes to stderr.
pub fn log(level: Level, comptime fmt: []const u8, args: anytype) void {
    const line = std.fmt.allocPrint(allocator, fmt, args) catch @panic("out of memory");
    defer allocator.free(line);
    if (in_component) {
        var s: c.processor_string_t = .{ .ptr = line.ptr, .len = line.len };
        c.tidewater_processor_log_log(@intFromEnum(level), &s);
    } else {
        std.debug.print("[{s}] {s}\n", .{ @tagName(level), line });
    }
}

/// A processor's function for one event.
pub const ProcessFn = fn (event: *const Event, out: *Outputs) Error!void;
/// A processor's init: refuse the config with `return tw.refuse(...)`.
pub const InitFn = fn (config: Config) InitError!void;

/// Exports `process` (and `init`, when not null) as the component's
/// `process` and `init`. Call it in a `comptime` block of the processor's
/// root file. Natively it exports nothing.
pub fn exportProcessor(comptime process: ProcessFn, comptime init: ?InitFn) void {
    if (!in_component) return;
    const glue = struct {
        fn initExport(config: *c.processor_list_tuple2_string_string_t, err: *c.processor_string_t) callconv(.c) bool {
            defer c.processor_list_tuple2_string_string_free(config);
            const f = init orelse return true;
            const entries: []const ConfigEntry = if (config.len > 0)
                @as([*]const ConfigEntry, @ptrCast(config.ptr))[0..config.len]
            else
                &.{};
            f(.{ .entries = entries }) catch |e| {
                if (e == error.OutOfMemory) @panic("out of memory");
                const m = dupe(if (pending.items.len > 0) pending.items else "error.Refused (returned without a message: use tw.refuse(...) to give one)") catch @panic("out of memory");
                err.* = .{ .ptr = m.ptr, .len = m.len };
                return false;
            };
            return true;
        }

        fn processExport(
            events: *c.processor_list_event_t,
            ret: *c.processor_list_result_list_output_process_error_t,
        ) callconv(.c) void {
            defer c.processor_list_event_free(events);
            const n = events.len;
            const results = allocator.alloc(c.processor_result_list_output_process_error_t, n) catch @panic("out of memory");
            for (events.ptr[0..n], results) |*raw, *r| r.* = processOne(raw);
            ret.* = .{ .ptr = if (n > 0) results.ptr else null, .len = n };
        }

        fn processOne(raw: *const c.processor_event_t) c.processor_result_list_output_process_error_t {
            const event = lift(raw);
            var out: Outputs = .{};
            pending.clearRetainingCapacity();
            process(&event, &out) catch |e| {
                out.deinit();
                const tag: u8 = switch (e) {
                    error.Transient => c.TIDEWATER_PROCESSOR_TYPES_PROCESS_ERROR_TRANSIENT,
                    error.Invalid => c.TIDEWATER_PROCESSOR_TYPES_PROCESS_ERROR_INVALID,
                    error.Fatal => c.TIDEWATER_PROCESSOR_TYPES_PROCESS_ERROR_FATAL,
                    error.OutOfMemory => @panic("out of memory"),
                };
                const m = dupe(failureMessage(e)) catch @panic("out of memory");
                return .{ .is_err = true, .val = .{ .err = .{
                    .tag = tag,
                    .val = .{ .invalid = .{ .ptr = if (m.len > 0) m.ptr else null, .len = m.len } },
                } } };
            };
            const outs = out.list.toOwnedSlice(allocator) catch @panic("out of memory");
            return .{ .is_err = false, .val = .{ .ok = .{
                .ptr = if (outs.len > 0) @ptrCast(outs.ptr) else null,
                .len = outs.len,
            } } };
        }

        fn bytes(ptr: ?[*]const u8, len: usize) []const u8 {
            return if (ptr) |p| p[0..len] else "";
        }

        fn lift(raw: *const c.processor_event_t) Event {
            // The bindings' header layout is Header's (checked above); a list
            // of none may have a null pointer, which a slice cannot.
            const headers: []const Header = if (raw.headers.len > 0)
                @as([*]const Header, @ptrCast(raw.headers.ptr))[0..raw.headers.len]
            else
                &.{};
            return .{
                .topic = bytes(raw.topic.ptr, raw.topic.len),
                .partition = raw.partition,
                .offset = raw.offset,
                .timestamp_ms = raw.timestamp_ms,
                .key = if (raw.key.is_some) bytes(raw.key.val.ptr, raw.key.val.len) else null,
                .value = if (raw.value.is_some) bytes(raw.value.val.ptr, raw.value.val.len) else null,
                .headers = headers,
            };
        }
    };
    @export(&glue.processExport, .{ .name = "exports_processor_process" });
    @export(&glue.initExport, .{ .name = "exports_processor_init" });
}

test "an error returned without a message is named in the dead letter" {
    pending.clearRetainingCapacity();
    try std.testing.expectEqualStrings(
        "error.Invalid (returned without a message: use tw.invalid(...) to give one)",
        failureMessage(error.Invalid),
    );
    try std.testing.expectEqualStrings(
        "error.Transient (returned without a message: use tw.transient(...) to give one)",
        failureMessage(error.Transient),
    );
    try std.testing.expectEqual(error.Invalid, invalid("reading {d} is bad", .{7}));
    try std.testing.expectEqualStrings("reading 7 is bad", failureMessage(error.Invalid));
    pending.clearRetainingCapacity();
}
