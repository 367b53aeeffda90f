//! The last step of `make bench`: one table of what the other benches
//! wrote (target/bench-embedded.json, target/bench-kafka.json,
//! target/bench-scaleout.json), each measure next to the goal issue 16
//! sets for it. Measures nothing itself; a bench that did not run leaves
//! its rows out and says so.

use serde_json::Value;

mod support;
use support::root;

/// A row: what is measured, tidewater's number, the peer's, their ratio
/// (or the number itself), the goal and whether it is met.
struct Row {
    what: String,
    value: String,
    against: String,
    goal: String,
    met: Option<bool>,
}

fn read(name: &str) -> Option<Value> {
    let path = root().join("target").join(name);
    let text = std::fs::read_to_string(&path).ok()?;
    serde_json::from_str(&text).ok()
}

fn rate(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1}k/s", v / 1000.0)
    } else {
        format!("{v:.0}/s")
    }
}

fn mib(bytes: f64) -> String {
    format!("{:.0} MiB", bytes / f64::from(1 << 20))
}

/// tidewater's `ours` against `peer`'s, at least `goal` times as fast (no
/// goal: shown for comparison).
fn ratio_row(kafka: &Value, ours: &str, peer: &str, label: &str, goal: Option<f64>) -> Option<Row> {
    let (a, b) = (kafka[ours].as_f64()?, kafka[peer].as_f64()?);
    let r = a / b;
    Some(Row {
        what: label.to_owned(),
        value: format!("{} / {} = {r:.2}", rate(a), rate(b)),
        against: peer.replace('_', " "),
        goal: goal.map_or("-".into(), |g| format!(">= {g}")),
        met: goal.map(|g| r >= g),
    })
}

fn kafka_rows(rows: &mut Vec<Row>, missing: &mut Vec<&str>) {
    let Some(k) = read("bench-kafka.json") else {
        missing.push("bench-kafka.json (the kafka bench)");
        return;
    };
    let pairs = [
        (
            "tidewater_at_least_once",
            "kstreams_eos_dedupe_enrich",
            "Kafka, at-least-once vs Kafka Streams EOS (dedupe + enrich)",
            Some(1.0),
        ),
        (
            "tidewater_exactly_once",
            "kstreams_eos_dedupe_enrich",
            "Kafka, exactly_once vs Kafka Streams EOS (dedupe + enrich)",
            Some(1.0),
        ),
        (
            "tidewater_at_least_once",
            "kstreams_eos_enrich",
            "Kafka, at-least-once vs Kafka Streams EOS (enrich only)",
            None,
        ),
        (
            "tidewater_at_least_once",
            "raw_copy",
            "Kafka, at-least-once vs raw consume -> produce copy",
            Some(0.8),
        ),
    ];
    for (ours, peer, label, goal) in pairs {
        match ratio_row(&k, ours, peer, label, goal) {
            Some(row) => rows.push(row),
            None => missing.push(peer),
        }
    }
}

fn embedded_rows(rows: &mut Vec<Row>, missing: &mut Vec<&str>) {
    let Some(e) = read("bench-embedded.json") else {
        missing.push("bench-embedded.json (the embedded bench)");
        return;
    };
    let num = |k: &str| e[k].as_f64().unwrap_or(f64::NAN);
    rows.push(Row {
        what: format!(
            "embedded log on disk, enrich with dedupe ({} events)",
            num("events")
        ),
        value: rate(num("events_per_s")),
        against: "-".into(),
        goal: ">= 200.0k/s".into(),
        met: Some(num("events_per_s") >= 200_000.0),
    });
    rows.push(Row {
        what: format!(
            "storage: database on disk / record bytes ({:.0} B per input event; file length {:.2})",
            num("bytes_per_event"),
            num("file_ratio")
        ),
        value: format!("{:.2}", num("storage_ratio")),
        against: format!("{} of records", mib(num("payload_bytes"))),
        goal: "<= 3".into(),
        met: Some(num("storage_ratio") <= 3.0),
    });
    rows.push(Row {
        what: "peak RSS, the demo's two processors".into(),
        value: mib(num("demo_peak_rss_bytes")),
        against: "-".into(),
        goal: "<= 100 MiB".into(),
        met: Some(num("demo_peak_rss_bytes") <= f64::from(100 << 20)),
    });
    rows.push(Row {
        what: "peak RSS, 100 processors on one host".into(),
        value: mib(num("hundred_processors_peak_rss_bytes")),
        against: "-".into(),
        goal: "<= 2048 MiB".into(),
        met: Some(num("hundred_processors_peak_rss_bytes") <= f64::from(2u32 << 30)),
    });
}

fn scaleout_rows(rows: &mut Vec<Row>, missing: &mut Vec<&str>) {
    let Some(ratio) =
        read("bench-scaleout.json").and_then(|s| s["throughput"]["ratio_three_to_one"].as_f64())
    else {
        missing.push("bench-scaleout.json (the scaleout bench)");
        return;
    };
    rows.push(Row {
        what: "Kafka, three hosts vs one on 2 cores".into(),
        value: format!("{ratio:.2}"),
        against: "one host".into(),
        goal: "-".into(),
        met: None,
    });
}

fn print(rows: &[Row]) {
    let w = |f: fn(&Row) -> &str, head: &str| {
        rows.iter()
            .map(|r| f(r).len())
            .chain([head.len()])
            .max()
            .unwrap_or(0)
    };
    let widths = [
        w(|r| &r.what, "measure"),
        w(|r| &r.value, "tidewater"),
        w(|r| &r.against, "against"),
        w(|r| &r.goal, "goal"),
    ];
    let line = |cells: [&str; 5]| {
        println!(
            "{:<a$}  {:>b$}  {:<c$}  {:<d$}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            a = widths[0],
            b = widths[1],
            c = widths[2],
            d = widths[3]
        );
    };
    line(["measure", "tidewater", "against", "goal", "met"]);
    for r in rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        line([&r.what, &r.value, &r.against, &r.goal, met]);
    }
}

fn main() {
    if let Some(filter) = std::env::args().skip(1).find(|a| !a.starts_with('-'))
        && !"summary".contains(filter.as_str())
    {
        return;
    }
    let (mut rows, mut missing) = (Vec::new(), Vec::new());
    kafka_rows(&mut rows, &mut missing);
    embedded_rows(&mut rows, &mut missing);
    scaleout_rows(&mut rows, &mut missing);
    println!("\nmake bench, issue 16's measures (one run on this machine):\n");
    print(&rows);
    for m in &missing {
        println!("not measured this run: {m}");
    }
}
