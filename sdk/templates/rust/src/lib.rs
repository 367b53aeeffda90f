//! `{{name}}`: upper-cases each value and counts the events it has seen.

use tidewater_sdk::{Event, Output, ProcessError, log, state};

/// Processes one event.
///
/// # Errors
///
/// [`ProcessError::Invalid`] for a tombstone or a value that is not UTF-8.
pub fn process(event: Event) -> Result<Vec<Output>, ProcessError> {
    let text = event
        .value_str()
        .ok_or_else(|| ProcessError::Invalid("value is a tombstone or not UTF-8".into()))?;
    let seen = state::get(b"seen")
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    state::set(b"seen", seen.to_string().as_bytes());
    log::info(&format!("event {seen}"));
    Ok(vec![
        Output::new(text.to_uppercase())
            .with_key_from(&event)
            .with_header("seen", seen.to_string()),
    ])
}

tidewater_sdk::export_processor!(process);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shouts_and_counts() {
        state::clear();
        let out = process(Event::new("in", "hi")).unwrap();
        assert_eq!(out[0].value.as_deref(), Some(&b"HI"[..]));
        let out = process(Event::new("in", "yo")).unwrap();
        assert_eq!(out[0].headers, [("seen".to_string(), b"2".to_vec())]);
        let tombstone = Event {
            value: None,
            ..Event::new("in", "")
        };
        assert!(matches!(process(tombstone), Err(ProcessError::Invalid(_))));
    }
}
