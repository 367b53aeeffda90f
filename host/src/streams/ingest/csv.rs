//! Turning CSV files of sensor readings into events.
//!
//! Each row becomes one record:
//! - value: a JSON object `{"device": ID, "ts": "<the row's time as written>",
//!   <column>: <cell>, ...}` with the other columns in file order; a cell
//!   is a JSON number when it parses as one, `null` when it is empty or
//!   `nil`/`null`/`NaN` (any case), else a string;
//! - key: the device id;
//! - timestamp: the row's time (RFC 3339 / ISO 8601, with `T` or a space;
//!   UTC when it names no offset), in ms since the Unix epoch.
//!
//! The file may be gzip-compressed (detected by its magic bytes) and have
//! CRLF line ends. A row that cannot be turned into an event is reported
//! with its line number, never silently dropped.

use std::io::{BufRead, BufReader, Read};

use chrono::{DateTime, NaiveDateTime};

use crate::streams::Record;

/// How to read a CSV file.
#[derive(Debug, Clone)]
pub struct CsvOptions {
    /// The device id written into every event and used as the record key.
    pub device: String,
    /// The column holding each row's time.
    pub time_column: String,
}

/// A row that could not be turned into an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    /// The 1-based line number in the file (the header is line 1).
    pub line: u64,
    /// What was wrong.
    pub reason: String,
    /// The row's bytes as read: its cells joined by commas (quotes removed).
    pub raw: Vec<u8>,
}

/// Why a CSV file could not be read at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The file has no header line.
    #[error("the file is empty: a CSV header naming the columns is needed")]
    Empty,
    /// The header is unreadable.
    #[error("cannot read the CSV header: {0}")]
    Header(String),
    /// The time column is not in the header.
    #[error("column {column:?} is not in the header (columns: {columns})")]
    NoTimeColumn {
        /// The column asked for.
        column: String,
        /// The columns there are, comma-separated.
        columns: String,
    },
    /// A column name is used twice, or is one of the fields the event gets anyway.
    #[error("column {0:?} {1}")]
    BadColumn(String, &'static str),
    /// Reading or decompressing failed part way.
    #[error("cannot read the file after line {line}: {message}")]
    Io {
        /// The last line read completely.
        line: u64,
        /// What failed (e.g. a truncated gzip stream).
        message: String,
    },
}

/// Parses a time as written in the data sets: RFC 3339 with `T` or a space,
/// with `Z` or an offset, or with no offset (taken as UTC); seconds may have
/// a fraction. Returns ms since the Unix epoch.
///
/// # Errors
///
/// A message naming the text when it is none of these.
pub fn parse_time_ms(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.timestamp_millis());
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
    ] {
        if let Ok(d) = DateTime::parse_from_str(t, f) {
            return Ok(d.timestamp_millis());
        }
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, f) {
            return Ok(d.and_utc().timestamp_millis());
        }
    }
    Err(format!(
        "time {text:?} is not a date-time (expected e.g. 2016-02-15T00:00:00Z, 2022-03-20T11:00:00+01:00 or 2010-03-24 09:51:00)"
    ))
}

fn cell_json(cell: &str) -> String {
    let c = cell.trim();
    if c.is_empty() || ["nil", "null", "nan"].contains(&c.to_ascii_lowercase().as_str()) {
        return "null".into();
    }
    if let Ok(i) = c.parse::<i64>() {
        return i.to_string();
    }
    if let Ok(x) = c.parse::<f64>()
        && x.is_finite()
        && c.bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
    {
        return serde_json::Value::from(x).to_string();
    }
    serde_json::Value::from(c).to_string()
}

/// Opens `reader`, decompressing it when it starts with the gzip magic bytes.
///
/// # Errors
///
/// I/O errors.
pub fn maybe_gunzip<'a>(reader: impl Read + 'a) -> std::io::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::new(reader);
    let head = buffered.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(buffered)))
    } else {
        Ok(Box::new(buffered))
    }
}

/// Reads CSV rows from `reader` (plain or gzip) and calls `each` with every
/// row's event or its [`BadRow`], in file order.
///
/// # Errors
///
/// [`IngestError`] when the file as a whole cannot be read: no header, the
/// time column missing, a column named twice or named `device` or `ts`
/// (the fields every event gets), or a read that fails part way (such as a
/// truncated gzip file: the rows before it were passed to `each`).
pub fn read_csv(
    reader: impl Read,
    options: &CsvOptions,
    mut each: impl FnMut(Result<Record, BadRow>),
) -> Result<(), IngestError> {
    let io = |line: u64, e: &dyn std::fmt::Display| IngestError::Io {
        line,
        message: e.to_string(),
    };
    let mut csv = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(false)
        .from_reader(maybe_gunzip(reader).map_err(|e| io(0, &e))?);
    let mut row = csv::ByteRecord::new();
    let (header, time_idx) = read_header(&mut csv, &mut row, options)?;
    let device_json = serde_json::Value::from(options.device.as_str()).to_string();
    let mut last_line = 1;
    loop {
        match csv.read_byte_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                if let csv::ErrorKind::Io(err) = e.kind() {
                    return Err(io(last_line, err));
                }
                let line = e.position().map_or(last_line + 1, |p| p.line());
                each(Err(BadRow {
                    line,
                    reason: format!("not a CSV row: {e}"),
                    raw: Vec::new(),
                }));
                continue;
            }
        }
        let line = row.position().map_or(last_line + 1, |p| p.line());
        last_line = line;
        each(row_record(
            &row,
            line,
            &header,
            time_idx,
            &device_json,
            options,
        ));
    }
    Ok(())
}

/// Reads the header row into `row`: the column names (a UTF-8 BOM taken
/// off) and the index of the time column.
fn read_header(
    csv: &mut csv::Reader<impl Read>,
    row: &mut csv::ByteRecord,
    options: &CsvOptions,
) -> Result<(Vec<String>, usize), IngestError> {
    match csv.read_byte_record(row) {
        Ok(true) => {}
        Ok(false) => return Err(IngestError::Empty),
        Err(e) => return Err(IngestError::Header(e.to_string())),
    }
    let header: Vec<String> = row
        .iter()
        .map(|h| {
            std::str::from_utf8(h)
                .map(|h| h.trim_start_matches('\u{feff}').to_owned())
                .map_err(|_| IngestError::Header("a column name is not UTF-8".into()))
        })
        .collect::<Result<_, _>>()?;
    let time_idx = header
        .iter()
        .position(|h| *h == options.time_column)
        .ok_or_else(|| IngestError::NoTimeColumn {
            column: options.time_column.clone(),
            columns: header.join(", "),
        })?;
    for (i, h) in header.iter().enumerate() {
        if (h == "device" || h == "ts") && i != time_idx {
            return Err(IngestError::BadColumn(
                h.clone(),
                "is a field every event gets (device id, row time): rename the column",
            ));
        }
        if header[..i].contains(h) {
            return Err(IngestError::BadColumn(
                h.clone(),
                "appears twice in the header",
            ));
        }
    }
    Ok((header, time_idx))
}

/// The event of one data row (`line` in the file), or why it cannot be one.
fn row_record(
    row: &csv::ByteRecord,
    line: u64,
    header: &[String],
    time_idx: usize,
    device_json: &str,
    options: &CsvOptions,
) -> Result<Record, BadRow> {
    let bad = |reason: String| BadRow {
        line,
        reason,
        raw: row.iter().collect::<Vec<_>>().join(&b","[..]),
    };
    if row.len() != header.len() {
        return Err(bad(format!(
            "row has {} cells, the header has {}",
            row.len(),
            header.len()
        )));
    }
    let cells: Vec<&str> = row
        .iter()
        .map(std::str::from_utf8)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("row is not UTF-8 ({e})")))?;
    let time_text = cells[time_idx];
    let timestamp_ms = parse_time_ms(time_text).map_err(bad)?;
    let mut value = String::with_capacity(64 + row.as_slice().len() * 2);
    value.push_str("{\"device\":");
    value.push_str(device_json);
    value.push_str(",\"ts\":");
    value.push_str(&serde_json::Value::from(time_text).to_string());
    for (i, cell) in cells.iter().enumerate() {
        if i == time_idx {
            continue;
        }
        value.push(',');
        value.push_str(&serde_json::Value::from(header[i].as_str()).to_string());
        value.push(':');
        value.push_str(&cell_json(cell));
    }
    value.push('}');
    Ok(Record {
        timestamp_ms,
        key: Some(options.device.clone().into_bytes()),
        value: Some(value.into_bytes()),
        headers: Vec::new(),
    })
}

/// Whether the row at `line` of `device`'s file is among the `percent`
/// percent chosen for redelivery: a fixed function of the two, so a rerun
/// picks the same rows.
pub fn chosen_for_redelivery(device: &str, line: u64, percent: f64) -> bool {
    use sha2::{Digest, Sha256};
    let d = Sha256::new()
        .chain_update(device.as_bytes())
        .chain_update(line.to_be_bytes())
        .finalize();
    let x = u64::from_be_bytes(d[..8].try_into().unwrap_or_default()) % 10_000;
    (x as f64) < percent * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> CsvOptions {
        CsvOptions {
            device: "cgm-1".into(),
            time_column: "datetime".into(),
        }
    }

    fn collect(data: &[u8]) -> Vec<Result<Record, BadRow>> {
        let mut out = Vec::new();
        read_csv(data, &opts(), |r| out.push(r)).unwrap();
        out
    }

    #[test]
    fn rows_become_json_events() {
        let rows = collect(b"isig,datetime,glucose\r\n22.59,2010-03-24 09:51:00,258\r\nnil,2010-03-24 09:56:00,260\r\n");
        let values: Vec<String> = rows
            .iter()
            .map(|r| String::from_utf8(r.as_ref().unwrap().value.clone().unwrap()).unwrap())
            .collect();
        assert_eq!(
            values,
            [
                r#"{"device":"cgm-1","ts":"2010-03-24 09:51:00","isig":22.59,"glucose":258}"#,
                r#"{"device":"cgm-1","ts":"2010-03-24 09:56:00","isig":null,"glucose":260}"#,
            ]
        );
        let r = rows[0].as_ref().unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"cgm-1"[..]));
        assert_eq!(r.timestamp_ms, 1_269_424_260_000);
    }

    #[test]
    fn gzip_is_detected() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"isig,datetime,glucose\n1,2010-03-24 09:51:00,2\n")
            .unwrap();
        let rows = collect(&gz.finish().unwrap());
        assert_eq!(rows.len(), 1);
        assert!(rows[0].is_ok());
    }

    #[test]
    fn bad_rows_name_their_line_and_keep_their_bytes() {
        let rows = collect(b"isig,datetime,glucose\n1,2010-03-24 09:51:00,2\n1,yesterday,2\n1,2\n3,2010-03-24 10:00:00,4\n");
        assert!(rows[0].is_ok());
        let bad = rows[1].as_ref().unwrap_err();
        assert_eq!(bad.line, 3);
        assert!(bad.reason.contains("\"yesterday\""), "{}", bad.reason);
        let bad = rows[2].as_ref().unwrap_err();
        assert_eq!(bad.line, 4);
        assert_eq!(bad.reason, "row has 2 cells, the header has 3");
        assert_eq!(bad.raw, b"1,2");
        assert!(rows[3].is_ok());
    }

    #[test]
    fn files_that_cannot_be_read_say_why() {
        let err = |data: &[u8]| read_csv(data, &opts(), |_| {}).unwrap_err().to_string();
        assert_eq!(
            err(b""),
            "the file is empty: a CSV header naming the columns is needed"
        );
        assert_eq!(
            err(b"datetime,device,v\n"),
            "column \"device\" is a field every event gets (device id, row time): rename the column"
        );
        assert_eq!(
            err(b"datetime,v,v\n"),
            "column \"v\" appears twice in the header"
        );
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for i in 0..2000 {
            writeln!(gz, "{i},2010-03-24 09:51:00,{i}").unwrap();
        }
        let mut bytes = b"".to_vec();
        let mut head = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        head.write_all(b"isig,datetime,glucose\n").unwrap();
        bytes.extend(head.finish().unwrap());
        bytes.extend(gz.finish().unwrap());
        bytes.truncate(bytes.len() - 100);
        let mut rows = 0;
        let e = read_csv(&bytes[..], &opts(), |r| {
            assert!(r.is_ok());
            rows += 1;
        })
        .unwrap_err();
        assert!(matches!(e, IngestError::Io { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("cannot read the file after line {}", rows + 1)),
            "{e}"
        );
    }

    #[test]
    fn rows_that_are_not_utf8_keep_their_bytes() {
        let rows = collect(b"isig,datetime,glucose\n\xff,2010-03-24 09:51:00,1\n");
        let bad = rows[0].as_ref().unwrap_err();
        assert_eq!(bad.line, 2);
        assert_eq!(bad.raw, b"\xff,2010-03-24 09:51:00,1");
    }

    #[test]
    fn missing_time_column_lists_the_columns() {
        let err = read_csv(&b"a,b\n1,2\n"[..], &opts(), |_| {}).unwrap_err();
        assert_eq!(
            err.to_string(),
            "column \"datetime\" is not in the header (columns: a, b)"
        );
    }

    #[test]
    fn times_in_the_data_sets_parse() {
        assert_eq!(
            parse_time_ms("2016-02-15T00:00:00Z").unwrap(),
            1_455_494_400_000
        );
        assert_eq!(
            parse_time_ms("2022-03-20T11:00:00+01:00").unwrap(),
            1_647_770_400_000
        );
        assert_eq!(
            parse_time_ms("2015-02-04 17:51:00").unwrap(),
            1_423_072_260_000
        );
        assert_eq!(
            parse_time_ms("2015-02-04 17:51:00.5").unwrap(),
            1_423_072_260_500
        );
        assert!(parse_time_ms("17:51").is_err());
    }

    #[test]
    fn cells() {
        assert_eq!(cell_json("426.0"), "426.0");
        assert_eq!(cell_json(" 7 "), "7");
        assert_eq!(cell_json("NIL"), "null");
        assert_eq!(cell_json(""), "null");
        assert_eq!(cell_json("inf"), "\"inf\"");
        assert_eq!(cell_json("on"), "\"on\"");
    }

    #[test]
    fn redelivery_choice_is_stable_and_about_right() {
        let n = (0..100_000)
            .filter(|&l| chosen_for_redelivery("d", l, 5.0))
            .count();
        assert!((4_500..5_500).contains(&n), "{n}");
        assert_eq!(
            chosen_for_redelivery("d", 17, 5.0),
            chosen_for_redelivery("d", 17, 5.0)
        );
        assert_eq!(
            (0..1000)
                .filter(|&l| chosen_for_redelivery("d", l, 0.0))
                .count(),
            0
        );
    }
}
