//! The sensor-reading model shared by the Zig processors: the Zig port of
//! plugins/rust/readings (its crate docs are the rule).
//!
//! - `parse` reads one JSON value strictly (RFC 8259, as serde_json does):
//!   numbers correctly rounded, invalid UTF-8, lone surrogate escapes,
//!   numbers too large for a double and more than 127 levels of nesting
//!   refused; object members kept in order (of repeated keys `get` finds the last).
//! - `writeNumber` writes a double as ECMAScript's Number::toString does.
//! - `writeString` writes a JSON string as serde_json does.

const std = @import("std");

/// A parsed JSON value; strings are decoded UTF-8, all of it in the parse's arena.
pub const Value = union(enum) {
    null,
    bool: bool,
    number: f64,
    string: []const u8,
    /// Arrays are checked, not kept: no processor reads one.
    array,
    object: []const Member,
};

/// A member of an object, in document order.
pub const Member = struct { key: []const u8, value: Value };

/// The bytes are not JSON.
pub const NotJson = error{NotJson};

/// The value of the last member called `key` (repeated keys: the last one wins), or null.
pub fn get(members: []const Member, key: []const u8) ?Value {
    var i = members.len;
    while (i > 0) {
        i -= 1;
        if (std.mem.eql(u8, members[i].key, key)) return members[i].value;
    }
    return null;
}

/// Parses `text` as one JSON value; everything it keeps is allocated in `arena`.
///
/// # Errors
/// `error.NotJson` for anything serde_json refuses; `error.OutOfMemory`.
pub fn parse(arena: std.mem.Allocator, text: []const u8) (NotJson || error{OutOfMemory})!Value {
    if (!std.unicode.utf8ValidateSlice(text)) return error.NotJson;
    var p: Parser = .{ .s = text, .arena = arena };
    p.ws();
    const v = try p.value();
    p.ws();
    if (p.i != text.len) return error.NotJson;
    return v;
}

const Parser = struct {
    s: []const u8,
    i: usize = 0,
    depth: u32 = 0,
    arena: std.mem.Allocator,

    const Error = NotJson || error{OutOfMemory};

    fn ws(p: *Parser) void {
        while (p.i < p.s.len) : (p.i += 1) switch (p.s[p.i]) {
            ' ', '\t', '\n', '\r' => {},
            else => return,
        };
    }

    fn eat(p: *Parser, c: u8) bool {
        if (p.i < p.s.len and p.s[p.i] == c) {
            p.i += 1;
            return true;
        }
        return false;
    }

    fn value(p: *Parser) Error!Value {
        if (p.i >= p.s.len) return error.NotJson;
        return switch (p.s[p.i]) {
            '{' => p.object(),
            '[' => p.array(),
            '"' => .{ .string = try p.string() },
            't' => p.literal("true", .{ .bool = true }),
            'f' => p.literal("false", .{ .bool = false }),
            'n' => p.literal("null", .null),
            else => .{ .number = try p.number() },
        };
    }

    fn literal(p: *Parser, word: []const u8, v: Value) NotJson!Value {
        if (!std.mem.startsWith(u8, p.s[p.i..], word)) return error.NotJson;
        p.i += word.len;
        return v;
    }

    fn enter(p: *Parser) NotJson!void {
        p.depth += 1;
        if (p.depth >= 128) return error.NotJson; // serde_json: 127 levels at most
        p.i += 1;
        p.ws();
    }

    fn object(p: *Parser) Error!Value {
        try p.enter();
        var members: std.ArrayList(Member) = .empty;
        if (!p.eat('}')) while (true) {
            p.ws();
            if (p.i >= p.s.len or p.s[p.i] != '"') return error.NotJson;
            const key = try p.string();
            p.ws();
            if (!p.eat(':')) return error.NotJson;
            p.ws();
            try members.append(p.arena, .{ .key = key, .value = try p.value() });
            p.ws();
            if (p.eat(',')) continue;
            if (p.eat('}')) break;
            return error.NotJson;
        };
        p.depth -= 1;
        return .{ .object = members.items };
    }

    fn array(p: *Parser) Error!Value {
        try p.enter();
        if (!p.eat(']')) while (true) {
            p.ws();
            _ = try p.value();
            p.ws();
            if (p.eat(',')) continue;
            if (p.eat(']')) break;
            return error.NotJson;
        };
        p.depth -= 1;
        return .array;
    }

    fn hex4(p: *Parser) NotJson!u21 {
        if (p.s.len - p.i < 4) return error.NotJson;
        const v = std.fmt.parseUnsigned(u16, p.s[p.i..][0..4], 16) catch return error.NotJson;
        p.i += 4;
        return v;
    }

    /// A string at the opening quote (the text is valid UTF-8 already).
    fn string(p: *Parser) Error![]const u8 {
        p.i += 1;
        const start = p.i;
        // The common case: no escapes, the bytes are the string.
        while (p.i < p.s.len) : (p.i += 1) switch (p.s[p.i]) {
            '"' => {
                p.i += 1;
                return p.s[start .. p.i - 1];
            },
            '\\' => break,
            0...0x1f => return error.NotJson,
            else => {},
        } else return error.NotJson;
        var out: std.ArrayList(u8) = .empty;
        try out.appendSlice(p.arena, p.s[start..p.i]);
        while (p.i < p.s.len) {
            const ch = p.s[p.i];
            p.i += 1;
            switch (ch) {
                '"' => return out.items,
                0...0x1f => return error.NotJson,
                '\\' => {
                    if (p.i >= p.s.len) return error.NotJson;
                    const e = p.s[p.i];
                    p.i += 1;
                    const simple: u8 = switch (e) {
                        '"', '\\', '/' => e,
                        'b' => 8,
                        'f' => 12,
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        'u' => {
                            var cp = try p.hex4();
                            if (cp >= 0xdc00 and cp <= 0xdfff) return error.NotJson;
                            if (cp >= 0xd800 and cp <= 0xdbff) {
                                if (!p.eat('\\') or !p.eat('u')) return error.NotJson;
                                const lo = try p.hex4();
                                if (lo < 0xdc00 or lo > 0xdfff) return error.NotJson;
                                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                            }
                            var buf: [4]u8 = undefined;
                            const n = std.unicode.utf8Encode(cp, &buf) catch return error.NotJson;
                            try out.appendSlice(p.arena, buf[0..n]);
                            continue;
                        },
                        else => return error.NotJson,
                    };
                    try out.append(p.arena, simple);
                },
                else => try out.append(p.arena, ch),
            }
        }
        return error.NotJson;
    }

    fn digits(p: *Parser) usize {
        const start = p.i;
        while (p.i < p.s.len and std.ascii.isDigit(p.s[p.i])) p.i += 1;
        return p.i - start;
    }

    fn number(p: *Parser) NotJson!f64 {
        const start = p.i;
        _ = p.eat('-');
        if (p.eat('0')) {} else if (p.i < p.s.len and p.s[p.i] >= '1' and p.s[p.i] <= '9') {
            _ = p.digits();
        } else return error.NotJson;
        if (p.eat('.') and p.digits() == 0) return error.NotJson;
        if (p.eat('e') or p.eat('E')) {
            _ = p.eat('+') or p.eat('-');
            if (p.digits() == 0) return error.NotJson;
        }
        const x = std.fmt.parseFloat(f64, p.s[start..p.i]) catch return error.NotJson;
        if (std.math.isInf(x)) return error.NotJson;
        return x;
    }
};

/// Byte order of two strings (the order of their UTF-8, shorter first on a tie).
pub fn byteLess(_: void, a: []const u8, b: []const u8) bool {
    return std.mem.lessThan(u8, a, b);
}

/// The Rust `str::parse::<f64>` grammar without trimming, finite only:
/// `[+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?`.
pub fn parseF64Strict(s: []const u8) ?f64 {
    var i: usize = 0;
    if (i < s.len and (s[i] == '+' or s[i] == '-')) i += 1;
    var n: usize = 0;
    while (i < s.len and std.ascii.isDigit(s[i])) : (i += 1) n += 1;
    if (i < s.len and s[i] == '.') {
        i += 1;
        while (i < s.len and std.ascii.isDigit(s[i])) : (i += 1) n += 1;
    }
    if (n == 0) return null;
    if (i < s.len and (s[i] == 'e' or s[i] == 'E')) {
        i += 1;
        if (i < s.len and (s[i] == '+' or s[i] == '-')) i += 1;
        var e: usize = 0;
        while (i < s.len and std.ascii.isDigit(s[i])) : (i += 1) e += 1;
        if (e == 0) return null;
    }
    if (i != s.len) return null;
    const x = std.fmt.parseFloat(f64, s) catch return null;
    return if (std.math.isFinite(x)) x else null;
}

/// A number written as text (readings::parse_number_text): `parseF64Strict`
/// after removing leading and trailing ASCII whitespace (space, tab, LF, FF, CR).
pub fn parseNumberText(s: []const u8) ?f64 {
    return parseF64Strict(std.mem.trim(u8, s, " \t\n\x0c\r"));
}

/// Appends `x` in the canonical number form (ECMAScript's `String(x)`), or `null`.
pub fn writeNumber(out: *std.ArrayList(u8), gpa: std.mem.Allocator, x: ?f64) error{OutOfMemory}!void {
    const v = x orelse return out.appendSlice(gpa, "null");
    if (!std.math.isFinite(v)) return out.appendSlice(gpa, "null");
    if (v == 0) return out.append(gpa, '0'); // -0 is written 0, as JavaScript does
    // The shortest digits that read back to v: "4.929e0", "1e-7", "-1.5e2".
    var buf: [std.fmt.float.min_buffer_size]u8 = undefined;
    const sci = std.fmt.float.render(&buf, @abs(v), .{ .mode = .scientific }) catch unreachable;
    const e_at = std.mem.indexOfScalar(u8, sci, 'e').?;
    const exp = std.fmt.parseInt(i32, sci[e_at + 1 ..], 10) catch unreachable;
    var digits_buf: [32]u8 = undefined;
    var k: usize = 0;
    for (sci[0..e_at]) |ch| if (ch != '.') {
        digits_buf[k] = ch;
        k += 1;
    };
    while (k > 1 and digits_buf[k - 1] == '0') k -= 1;
    if (v < 0) try out.append(gpa, '-');
    try placePoint(out, gpa, digits_buf[0..k], exp + 1);
}

/// Places the decimal point as ECMAScript's Number::toString does: the value
/// is 0.digits × 10^n, `digits` without leading or trailing zeros.
fn placePoint(out: *std.ArrayList(u8), gpa: std.mem.Allocator, digits: []const u8, n: i32) error{OutOfMemory}!void {
    const k: i32 = @intCast(digits.len);
    if (k <= n and n <= 21) {
        try out.appendSlice(gpa, digits);
        try out.appendNTimes(gpa, '0', @intCast(n - k));
    } else if (0 < n and n <= 21) {
        const at: usize = @intCast(n);
        try out.appendSlice(gpa, digits[0..at]);
        try out.append(gpa, '.');
        try out.appendSlice(gpa, digits[at..]);
    } else if (-6 < n and n <= 0) {
        try out.appendSlice(gpa, "0.");
        try out.appendNTimes(gpa, '0', @intCast(-n));
        try out.appendSlice(gpa, digits);
    } else {
        try out.append(gpa, digits[0]);
        if (k > 1) {
            try out.append(gpa, '.');
            try out.appendSlice(gpa, digits[1..]);
        }
        try out.print(gpa, "e{c}{d}", .{ @as(u8, if (n > 0) '+' else '-'), @abs(n - 1) });
    }
}

/// Appends `s` as a JSON string, escaped as serde_json escapes it.
pub fn writeString(out: *std.ArrayList(u8), gpa: std.mem.Allocator, s: []const u8) error{OutOfMemory}!void {
    const hex = "0123456789abcdef";
    try out.append(gpa, '"');
    var run: usize = 0;
    for (s, 0..) |ch, i| {
        var u = [6]u8{ '\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15] };
        const esc: []const u8 = switch (ch) {
            '"' => "\\\"",
            '\\' => "\\\\",
            8 => "\\b",
            12 => "\\f",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            0...7, 11, 14...0x1f => &u,
            else => continue,
        };
        try out.appendSlice(gpa, s[run..i]);
        try out.appendSlice(gpa, esc);
        run = i + 1;
    }
    try out.appendSlice(gpa, s[run..]);
    try out.append(gpa, '"');
}

fn numberText(x: f64) ![]u8 {
    var out: std.ArrayList(u8) = .empty;
    try writeNumber(&out, std.testing.allocator, x);
    return out.toOwnedSlice(std.testing.allocator);
}

test "numbers are canonical" {
    // Runtime doubles: comptime float arithmetic is exact (f128) and would not round as f64 does.
    var c4929: f64 = 4.929;
    var c01: f64 = 0.1;
    _ = .{ &c4929, &c01 };
    const cases = [_]struct { f64, []const u8 }{
        .{ 40.0, "40" },                      .{ -0.0, "0" },
        .{ 4.929, "4.929" },                  .{ c4929 * 9.0 / 5.0 + 32.0, "40.8722" },
        .{ c01 + 0.2, "0.30000000000000004" }, .{ 1e-7, "1e-7" },
        .{ 1.5e-7, "1.5e-7" },                .{ 1e-6, "0.000001" },
        .{ -0.00012345, "-0.00012345" },      .{ 1e21, "1e+21" },
        .{ 1e20, "100000000000000000000" },   .{ 1152921504606846976.0, "1152921504606847000" },
        .{ -1.7976931348623157e308, "-1.7976931348623157e+308" },
        .{ 5e-324, "5e-324" },
    };
    for (cases) |case| {
        const got = try numberText(case[0]);
        defer std.testing.allocator.free(got);
        try std.testing.expectEqualStrings(case[1], got);
    }
}

test "number text grammar" {
    try std.testing.expectEqual(@as(?f64, 4.5), parseNumberText(" 4.5\t"));
    try std.testing.expectEqual(@as(?f64, 1.0), parseNumberText("1."));
    try std.testing.expectEqual(@as(?f64, 0.5), parseNumberText(".5"));
    try std.testing.expectEqual(@as(?f64, 2000.0), parseNumberText("+2e3"));
    for ([_][]const u8{ "", " ", ".", "e5", "1e", "1e+", "inf", "NaN", "0x10", "1_0", "1,5", "1e400", "--1", "1.2.3" }) |bad| {
        try std.testing.expectEqual(@as(?f64, null), parseNumberText(bad));
    }
}

test "strict JSON" {
    var arena = std.heap.ArenaAllocator.init(std.testing.allocator);
    defer arena.deinit();
    const a = arena.allocator();
    const v = try parse(a, "{\"a\":1,\"b\":\"x\\u00e9\\ud83c\\udf0a\",\"a\":[2,{}]}");
    try std.testing.expectEqualStrings("x\u{e9}\u{1f30a}", get(v.object, "b").?.string);
    try std.testing.expect(get(v.object, "a").? == .array);
    for ([_][]const u8{ "{", "01", "1e400", "\"\\ud800\"", "NaN", "\xef\xbb\xbf{}", "\"\xff\"", "[1,]" }) |bad| {
        try std.testing.expectError(error.NotJson, parse(a, bad));
    }
    var deep: [256]u8 = undefined;
    @memset(deep[0..128], '[');
    @memset(deep[128..], ']');
    try std.testing.expectError(error.NotJson, parse(a, &deep));
    _ = try parse(a, deep[1..255]);
}
