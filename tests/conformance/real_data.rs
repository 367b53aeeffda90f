//! Every language's `enrich` and `threshold` on real data give the very
//! bytes Rust gives: the first 500 rows of each of the four data sets of the
//! demo, in batches of 100, through enrich; enrich's outputs through
//! threshold (with bounds, so alerts fire), state carried across batches.

use std::sync::Arc;

use redb::ReadableDatabase;
use tidewater::processing::state::{ApplyState, dump, overlay};
use tidewater::runtime::{Event, EventResult, Limits, ProcessError};

use super::{component, languages, root, runtime};

const ROWS_PER_SET: usize = 500;
const BATCH: usize = 100;

fn readings() -> Vec<Event> {
    let sets = [
        ("sea_surface_temperature.csv.gz", "buoy-b01", "time (UTC)"),
        ("water-flow.csv", "pipeline-7", "Time"),
        ("occupancy.csv", "office-12", "time"),
        ("CGM.csv.gz", "cgm-3", "datetime"),
    ];
    let mut events = Vec::new();
    for (file, device, time) in sets {
        let f = std::fs::File::open(root().join("data").join(file)).expect("data file");
        let options = tidewater::streams::ingest::CsvOptions {
            device: device.into(),
            time_column: time.into(),
        };
        let mut n = 0;
        tidewater::streams::ingest::read_csv(f, &options, |r| {
            if n < ROWS_PER_SET
                && let Ok(r) = r
            {
                events.push(Event {
                    topic: "sensor-readings".into(),
                    partition: 0,
                    offset: events.len() as u64,
                    timestamp_ms: r.timestamp_ms,
                    key: r.key,
                    value: r.value,
                    headers: r.headers,
                });
                n += 1;
            }
        })
        .expect("csv");
    }
    events
}

/// Key, value of each output, or the error, per event; and the final state.
type Run = (
    Vec<Result<Vec<(Option<Vec<u8>>, Option<Vec<u8>>)>, String>>,
    Vec<(Vec<u8>, Vec<u8>)>,
);

fn run(language: &str, processor: &str, config: &[(String, String)], events: &[Event]) -> Run {
    let rt = runtime();
    let loaded = rt.load(&component(language, processor)).expect("load");
    let dir = tempfile::tempdir().expect("temp dir");
    let db = tidewater::db::open(dir.path()).expect("db");
    let name: Arc<str> = processor.into();
    let mut instance = rt
        .instantiate(&loaded, name.clone(), Limits::default(), config)
        .expect("instantiate");
    let mut results = Vec::new();
    for batch in events.chunks(BATCH) {
        let mut overlay = overlay(name.clone(), db.begin_read().expect("read"));
        let got: Vec<EventResult> = instance.process(batch, &mut overlay).expect("process");
        results.extend(got.into_iter().map(|r| match r {
            Ok(outs) => Ok(outs.into_iter().map(|o| (o.key, o.value)).collect()),
            Err(ProcessError::Invalid(m)) => Err(format!("invalid {m}")),
            Err(ProcessError::Transient(m)) => Err(format!("transient {m}")),
            Err(ProcessError::Fatal(m)) => Err(format!("fatal {m}")),
        }));
        let txn = db.begin_write().expect("write");
        overlay.apply_in(&txn).expect("apply");
        txn.commit().expect("commit");
    }
    (results, dump(&db, processor).expect("dump"))
}

#[test]
fn every_language_gives_rusts_bytes_on_real_data() {
    let input = readings();
    assert_eq!(input.len(), 4 * ROWS_PER_SET);
    let (want, _) = run("rust", "enrich", &[], &input);
    // enrich's outputs are threshold's input.
    let enriched: Vec<Event> = want
        .iter()
        .flat_map(|r| r.iter().flatten())
        .enumerate()
        .map(|(i, (key, value))| Event {
            topic: "readings-enriched".into(),
            partition: 0,
            offset: i as u64,
            timestamp_ms: 0,
            key: key.clone(),
            value: value.clone(),
            headers: Vec::new(),
        })
        .collect();
    assert!(
        enriched.len() > 1900,
        "enrich kept {} readings",
        enriched.len()
    );
    let rules: Vec<(String, String)> = [
        ("temperature_c.max", "5"),
        ("temperature_c.delta", "0.05"),
        ("flow_l_s.min", "50"),
        ("glucose_mg_dl.min", "70"),
        ("glucose_mg_dl.max", "180"),
        ("co2_ppm.max", "700"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let want_alerts = run("rust", "threshold", &rules, &enriched);
    let alerts: usize = want_alerts.0.iter().flatten().map(Vec::len).sum();
    assert!(alerts > 0, "the rules raise no alert on this data");
    for language in languages().iter().filter(|l| *l != "rust") {
        let (got, _) = run(language, "enrich", &[], &input);
        let differing = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(
            differing, 0,
            "{language}: enrich differs from Rust on {differing} readings"
        );
        let got = run(language, "threshold", &rules, &enriched);
        assert!(
            got == want_alerts,
            "{language}: threshold's alerts or state differ from Rust's"
        );
    }
}
