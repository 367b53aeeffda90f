//! Text for people that quotes what they sent: clipped, so that an error
//! never echoes a whole request body back.

use std::borrow::Cow;

/// How many characters of an echoed value a message shows.
pub const ECHO_CHARS: usize = 80;

/// The most a message may be, in bytes, after its quoted values are
/// clipped (a backstop for input echoed without quotes).
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// `s` when it has at most [`ECHO_CHARS`] characters; else its first
/// [`ECHO_CHARS`] characters, `…` and its whole size in bytes:
/// `aaaa… (500000 bytes)`.
pub fn clip(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(ECHO_CHARS) {
        None => Cow::Borrowed(s),
        Some((end, _)) => Cow::Owned(format!("{}… ({} bytes)", &s[..end], s.len())),
    }
}

/// `message` with every quoted span longer than [`ECHO_CHARS`] characters
/// clipped: a `"…"` span (as `{:?}` writes it, with `\` escapes) becomes
/// `"<first 80 characters>…" (N bytes)`, a `` `…` `` span (as serde names
/// fields) `` `<first 80 characters>…` (N bytes) ``, N being the span's
/// size as written. A message still over [`MAX_MESSAGE_BYTES`] is then
/// clipped whole. Short messages come back as they are.
pub fn clip_quoted(message: &str) -> Cow<'_, str> {
    if message.len() <= ECHO_CHARS {
        return Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE_BYTES));
    let mut changed = false;
    let mut rest = message;
    while let Some(open) = rest.find(['"', '`']) {
        let quote = rest.as_bytes()[open] as char;
        out.push_str(&rest[..=open]);
        let inside = &rest[open + 1..];
        let Some(close) = span_end(inside, quote) else {
            rest = inside;
            break;
        };
        let span = &inside[..close];
        match span.char_indices().nth(ECHO_CHARS) {
            None => {
                out.push_str(span);
                out.push(quote);
            }
            Some((end, _)) => {
                changed = true;
                out.push_str(&span[..end]);
                out.push('…');
                out.push(quote);
                out.push_str(&format!(" ({} bytes)", span.len()));
            }
        }
        rest = &inside[close + 1..];
    }
    out.push_str(rest);
    if out.len() > MAX_MESSAGE_BYTES {
        let end = (0..=MAX_MESSAGE_BYTES)
            .rev()
            .find(|&i| out.is_char_boundary(i))
            .unwrap_or(0);
        return Cow::Owned(format!("{}… ({} bytes)", &out[..end], out.len()));
    }
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(message)
    }
}

/// Where the span opened by `quote` ends in `inside` (the byte index of
/// its closing quote); `"` spans skip `\`-escaped characters.
fn span_end(inside: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in inside.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quote == '"' => escaped = true,
            c if c == quote => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_80_characters_and_tells_the_size() {
        assert_eq!(clip("short"), "short");
        let exact = "é".repeat(80);
        assert_eq!(clip(&exact), exact);
        let long = "a".repeat(500_000);
        assert_eq!(clip(&long), format!("{}… (500000 bytes)", "a".repeat(80)));
        let wide = "é".repeat(100);
        assert_eq!(clip(&wide), format!("{}… (200 bytes)", "é".repeat(80)));
    }

    #[test]
    fn clip_quoted_shortens_long_quoted_spans_only() {
        let short = r#"no processor "enrich" runs here (running: a, b)"#;
        assert!(matches!(clip_quoted(short), Cow::Borrowed(_)));
        let long = "x".repeat(500_000);
        let debug = format!("no processor {long:?} runs here (running: probe)");
        assert_eq!(
            clip_quoted(&debug),
            format!(
                "no processor \"{}…\" (500000 bytes) runs here (running: probe)",
                "x".repeat(80)
            )
        );
        let serde = format!(
            "the body is not the JSON expected: unknown field `{long}`, expected `version` or `canary` at line 1 column 500012"
        );
        assert_eq!(
            clip_quoted(&serde),
            format!(
                "the body is not the JSON expected: unknown field `{}…` (500000 bytes), expected `version` or `canary` at line 1 column 500012",
                "x".repeat(80)
            )
        );
        // Escaped quotes stay inside their span.
        let escaped = format!("{:?} is not a version", format!("\"{long}"));
        assert_eq!(
            clip_quoted(&escaped),
            format!(
                "\"\\\"{}…\" (500002 bytes) is not a version",
                "x".repeat(78)
            )
        );
    }

    #[test]
    fn clip_quoted_bounds_unquoted_echoes_too() {
        let m = format!("there is nothing at {}", "y".repeat(10_000));
        let clipped = clip_quoted(&m);
        assert_eq!(clipped.len(), MAX_MESSAGE_BYTES + "… (10020 bytes)".len());
        assert!(clipped.ends_with("yyy… (10020 bytes)"), "{clipped}");
        let open = format!("an unclosed \"{}", "z".repeat(5000));
        assert!(clip_quoted(&open).ends_with("… (5013 bytes)"));
    }
}
