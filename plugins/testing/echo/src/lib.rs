//! `echo`: a processor for the host's tests. Every event comes back as one
//! output with its key, value and headers byte for byte, whatever the value
//! says: the "fixed" version of `probe` that `tidewater dlq replay` tests
//! feed dead letters through. `count:<name>` also adds 1 to state `<name>`
//! (and still echoes), so a replay's state writes can be seen.

use tidewater_sdk::{Event, Output, ProcessError, state};

/// Echoes `event`; see the crate docs.
///
/// # Errors
///
/// Never.
pub fn process(event: Event) -> Result<Vec<Output>, ProcessError> {
    if let Some(name) = event
        .value
        .as_deref()
        .and_then(|v| v.strip_prefix(b"count:"))
    {
        let n = state::get(name).map_or(0, |b| b.len()) + 1;
        state::set(name, &vec![b'1'; n]);
    }
    Ok(vec![Output {
        topic: None,
        key: event.key,
        value: event.value,
        headers: event.headers,
    }])
}

tidewater_sdk::export_processor!(process);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_commands_too() {
        state::clear();
        let mut e = Event::new("t", "trap");
        e.headers = vec![("h".into(), vec![0xff])];
        let out = process(e.clone()).unwrap();
        assert_eq!(
            (out[0].value.clone(), out[0].headers.clone()),
            (e.value, e.headers)
        );
        process(Event::new("t", "count:a")).unwrap();
        process(Event::new("t", "count:a")).unwrap();
        assert_eq!(state::get(b"a"), Some(b"11".to_vec()));
    }
}
