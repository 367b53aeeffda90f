//! `probe`: a processor for the host's tests. The value of each event is a
//! command; anything that is not a command is echoed back.
//!
//! | value | result |
//! |---|---|
//! | `count:<name>` | adds 1 to state `<name>`, outputs the new count as decimal text |
//! | `invalid` | `invalid("probe invalid")` |
//! | `fatal` | `fatal("probe fatal")` |
//! | `transient` | `transient("probe transient")` |
//! | `trap` | panics (the instance traps) |
//! | `spin` | loops forever (the call hits its deadline) |
//! | `grow` | allocates until memory runs out (the instance hits its memory cap) |
//! | `grow-4g` | asks for 4 GiB of linear memory at once (`memory.grow`) |
//! | `recurse` | recurses without end (the call stack runs out) |
//! | `fanout:<n>:<bytes>` | `n` outputs, each a value of `bytes` bytes `x`, key `<index>` |
//! | `big:<bytes>` | one output whose value is `bytes` bytes `x` |
//! | `to:<topic>\|<topic>...` | one output per topic (which may be empty or not a valid name), to that topic, its value the topic, key `<index>` |
//! | `state-flood` | writes new state keys without end |
//! | `state-key:<bytes>` | writes one state key of `bytes` bytes, then echoes |
//! | `state-value:<bytes>` | writes one state value of `bytes` bytes, then echoes |
//! | `log-flood:<n>` | writes `n` warn lines through `log` and `n` lines to stderr, then echoes |
//! | anything else, or a tombstone | one output with the event's key, value and headers, byte for byte |
//!
//! Config: `fail-init = "<message>"` makes `init` refuse with that message;
//! `trap-init = "true"` makes it panic; `init-spin-ms = "<ms>"` makes it
//! busy-wait that long first; `fail-every = "<n>"` makes every event whose
//! offset is a multiple of `n` return `invalid("probe fail-every <n>")` (a
//! "changed build" for the host's shadow and canary tests).

use std::sync::atomic::{AtomicU64, Ordering};

use tidewater_sdk::{Config, Event, Output, ProcessError, state};

/// `fail-every`, 0 when not set.
static FAIL_EVERY: AtomicU64 = AtomicU64::new(0);

/// Refuses the config when it has `fail-init`, or a `fail-every` that is
/// not a whole number above 0.
///
/// # Errors
///
/// The `fail-init` message, or what is wrong with `fail-every`.
pub fn init(config: &Config) -> Result<(), String> {
    if let Some(ms) = config.parse::<u64>("init-spin-ms")? {
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(ms) {
            std::hint::spin_loop();
        }
    }
    if config.get("trap-init") == Some("true") {
        panic!("probe trap in init");
    }
    if let Some(m) = config.get("fail-init") {
        return Err(m.to_owned());
    }
    let every = match config.get("fail-every") {
        None => 0,
        Some(n) => match n.parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(format!(
                    "fail-every must be a whole number above 0, not {n:?}"
                ));
            }
        },
    };
    FAIL_EVERY.store(every, Ordering::Relaxed);
    Ok(())
}

/// Runs the event's command; see the crate docs.
///
/// # Errors
///
/// As the command says.
pub fn process(event: Event) -> Result<Vec<Output>, ProcessError> {
    let every = FAIL_EVERY.load(Ordering::Relaxed);
    if every > 0 && event.offset.is_multiple_of(every) {
        return Err(ProcessError::Invalid(format!("probe fail-every {every}")));
    }
    match event.value.as_deref() {
        Some(b"invalid") => Err(ProcessError::Invalid("probe invalid".into())),
        Some(b"fatal") => Err(ProcessError::Fatal("probe fatal".into())),
        Some(b"transient") => Err(ProcessError::Transient("probe transient".into())),
        Some(b"trap") => panic!("probe trap"),
        Some(b"spin") => {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        Some(b"grow") => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        Some(b"grow-4g") => grow_4g(),
        Some(b"recurse") => Ok(vec![Output::new(recurse(0).to_string())]),
        Some(b"state-flood") => {
            let mut i = 0u64;
            loop {
                state::set(&i.to_le_bytes(), b"v");
                i += 1;
            }
        }
        Some(v) if v.starts_with(b"fanout:") => {
            let (n, bytes) = two_numbers(&v[7..])?;
            Ok((0..n)
                .map(|i| Output {
                    topic: None,
                    key: Some(i.to_string().into_bytes()),
                    value: Some(vec![b'x'; bytes]),
                    headers: Vec::new(),
                })
                .collect())
        }
        Some(v) if v.starts_with(b"to:") => Ok(v[3..]
            .split(|b| *b == b'|')
            .enumerate()
            .map(|(i, topic)| Output {
                topic: Some(String::from_utf8_lossy(topic).into_owned()),
                key: Some(i.to_string().into_bytes()),
                value: Some(topic.to_vec()),
                headers: Vec::new(),
            })
            .collect()),
        Some(v) if v.starts_with(b"big:") => {
            let bytes = number(&v[4..])?;
            Ok(vec![Output::new(vec![b'x'; bytes])])
        }
        Some(v) if v.starts_with(b"state-key:") => {
            state::set(&vec![b'k'; number(&v[10..])?], b"v");
            Ok(vec![echo(event)])
        }
        Some(v) if v.starts_with(b"state-value:") => {
            state::set(b"k", &vec![b'v'; number(&v[12..])?]);
            Ok(vec![echo(event)])
        }
        Some(v) if v.starts_with(b"log-flood:") => {
            for i in 0..number(&v[10..])? {
                tidewater_sdk::log::warn(&format!("probe log flood {i}"));
                eprintln!("probe stderr flood {i}");
            }
            Ok(vec![echo(event)])
        }
        Some(v) if v.starts_with(b"count:") => {
            let name = &v[6..];
            let n = state::get(name)
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            state::set(name, n.to_string().as_bytes());
            Ok(vec![Output::new(n.to_string()).with_key_from(&event)])
        }
        _ => Ok(vec![echo(event)]),
    }
}

/// The event back as an output, byte for byte.
fn echo(event: Event) -> Output {
    Output {
        topic: None,
        key: event.key,
        value: event.value,
        headers: event.headers,
    }
}

fn number(text: &[u8]) -> Result<usize, ProcessError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| ProcessError::Invalid("probe: not a number".into()))
}

fn two_numbers(text: &[u8]) -> Result<(usize, usize), ProcessError> {
    let colon = text
        .iter()
        .position(|b| *b == b':')
        .ok_or_else(|| ProcessError::Invalid("probe: expected <n>:<bytes>".into()))?;
    Ok((number(&text[..colon])?, number(&text[colon + 1..])?))
}

/// Recurses until the call stack runs out; never returns.
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 8]);
    if std::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(depth + 1).wrapping_add(frame[3])
}

/// Asks for all of the 4 GiB a 32-bit instance can address.
fn grow_4g() -> Result<Vec<Output>, ProcessError> {
    #[cfg(target_arch = "wasm32")]
    {
        let have = core::arch::wasm32::memory_size(0);
        if core::arch::wasm32::memory_grow(0, 65536 - have) == usize::MAX {
            panic!("probe: memory.grow to 4 GiB failed");
        }
    }
    Ok(vec![Output::new("grew to 4 GiB")])
}

tidewater_sdk::export_processor!(process, init);

#[cfg(test)]
mod tests {
    use super::*;

    /// `fail-every` is process-wide: the tests that depend on it take turns.
    static FAIL_EVERY_USERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn echoes_and_counts() {
        let _turn = FAIL_EVERY_USERS.lock().unwrap_or_else(|e| e.into_inner());
        state::clear();
        let mut e = Event::new("t", vec![0xff, 0]);
        e.headers = vec![("h".into(), vec![0xfe]), ("h".into(), vec![])];
        let out = process(e.clone()).unwrap();
        assert_eq!(out[0].value, e.value);
        assert_eq!(out[0].headers, e.headers);
        assert_eq!(
            process(Event::new("t", "count:a")).unwrap()[0]
                .value
                .as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(
            process(Event::new("t", "count:a")).unwrap()[0]
                .value
                .as_deref(),
            Some(&b"2"[..])
        );
        assert_eq!(
            process(Event::new("t", "invalid")),
            Err(ProcessError::Invalid("probe invalid".into()))
        );
        let fan = process(Event::new("t", "fanout:3:2")).unwrap();
        assert_eq!(fan.len(), 3);
        assert_eq!(fan[2].key.as_deref(), Some(&b"2"[..]));
        assert_eq!(fan[2].value.as_deref(), Some(&b"xx"[..]));
        assert_eq!(
            process(Event::new("t", "big:5")).unwrap()[0]
                .value
                .as_deref(),
            Some(&b"xxxxx"[..])
        );
        let routed = process(Event::new("t", "to:a|b c|")).unwrap();
        let topics: Vec<_> = routed.iter().map(|o| o.topic.as_deref()).collect();
        assert_eq!(topics, [Some("a"), Some("b c"), Some("")]);
        assert_eq!(routed[1].key.as_deref(), Some(&b"1"[..]));
        assert_eq!(routed[1].value.as_deref(), Some(&b"b c"[..]));
        process(Event::new("t", "state-value:3")).unwrap();
        assert_eq!(state::get(b"k"), Some(b"vvv".to_vec()));
        assert_eq!(
            process(Event::new("t", "fanout:x")),
            Err(ProcessError::Invalid("probe: expected <n>:<bytes>".into()))
        );
    }

    #[test]
    fn fail_every_fails_offsets_that_are_multiples() {
        let _turn = FAIL_EVERY_USERS.lock().unwrap_or_else(|e| e.into_inner());
        let config = |v: &str| Config::from(vec![("fail-every".to_owned(), v.to_owned())]);
        assert!(init(&config("0")).is_err());
        assert!(init(&config("x")).is_err());
        init(&config("3")).unwrap();
        let at = |offset: u64| {
            let mut e = Event::new("t", "v");
            e.offset = offset;
            process(e)
        };
        assert_eq!(
            at(6),
            Err(ProcessError::Invalid("probe fail-every 3".into()))
        );
        assert!(at(7).is_ok());
        init(&Config::default()).unwrap();
        assert!(at(6).is_ok());
    }
}
