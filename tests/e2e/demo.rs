//! The demo's numbers on the real data, checkable by hand (data/README.md):
//! 73,284 rows, 73,280 distinct (device, time) keys, 4 conflicts.

use std::collections::BTreeSet;

use crate::common::*;

/// How often the flow drops below 50 l/s, counted straight from the CSV.
fn flow_drops_below_50() -> usize {
    let mut r = csv::Reader::from_path(root().join("data/water-flow.csv")).unwrap();
    let flows: Vec<f64> = r
        .records()
        .map(|row| row.unwrap()[1].parse().unwrap())
        .collect();
    let mut below = false;
    let mut drops = 0;
    for f in flows {
        if f < 50.0 && !below {
            drops += 1;
        }
        below = f < 50.0;
    }
    drops
}

#[test]
fn demo_counts_on_the_real_data_and_a_second_run_changes_nothing() {
    let env = Env::new();
    env.produce_csv("sensor-readings", &ALL_DATA, None);
    let total_in = env.records("sensor-readings").len() as u64;
    let resent = total_in - 73_284;
    assert!(
        (3_000..4_400).contains(&resent),
        "about 5% sent again, got {resent}"
    );

    let config = env.config(&demo_config_text());
    let summary = env.run(&config);
    let enrich = counters(&summary, "enrich");
    assert_eq!(enrich["events_in"], total_in);
    assert_eq!(enrich["duplicates"], resent);
    assert_eq!(enrich["conflicts"], 4);
    assert_eq!(enrich["outputs"], 73_280);
    assert_eq!(enrich["dead_lettered"], 4);
    assert_eq!(enrich["errors"], 0);
    let threshold = counters(&summary, "threshold");
    assert_eq!(threshold["events_in"], 73_280);
    assert_eq!(threshold["duplicates"], 0);

    let enriched = env.records("readings-enriched");
    assert_eq!(enriched.len(), 73_280);
    let keys: BTreeSet<String> = enriched
        .iter()
        .map(|r| header(r, "idempotency-key").unwrap())
        .collect();
    assert_eq!(keys.len(), 73_280, "distinct idempotency keys");

    // The four conflicts are the timestamps that occur twice with different values.
    let dlq = env.records("enrich.dlq");
    let mut conflicted: Vec<String> = dlq
        .iter()
        .map(|r| {
            assert_eq!(
                header(r, "tidewater-error-kind").unwrap(),
                "duplicate-key-different-payload"
            );
            String::from_utf8(r.record.key.clone().unwrap()).unwrap()
        })
        .collect();
    conflicted.sort();
    assert_eq!(conflicted, ["buoy-b01", "cgm-3", "cgm-3", "cgm-3"]);

    // The flow alerts match the drops counted from the raw file.
    let alerts = env.values("alerts");
    let below = alerts
        .iter()
        .filter(|a| a.contains(r#""measurement":"flow_l_s","alert":"below-min""#))
        .count();
    assert_eq!(below, flow_drops_below_50());
    assert_eq!(threshold["outputs"], alerts.len());

    // Every enriched reading has its unit conversions.
    let first = &env.values("readings-enriched")[0];
    assert_eq!(
        first,
        r#"{"device":"buoy-b01","ts":"2016-02-15T00:00:00Z","kind":"thermometer","measurements":{"temperature_c":4.929,"temperature_f":40.8722}}"#
    );

    // A second `make demo`: everything is ingested again and nothing changes.
    let before: Vec<_> = ["readings-enriched", "alerts", "enrich.dlq"]
        .iter()
        .map(|t| env.records(t))
        .collect();
    env.produce_csv("sensor-readings", &ALL_DATA, None);
    let summary = env.run(&config);
    let enrich = counters(&summary, "enrich");
    assert_eq!(enrich["events_in"], total_in);
    assert_eq!(enrich["duplicates"], total_in);
    assert_eq!(enrich["outputs"], 0);
    assert_eq!(enrich["dead_lettered"], 0);
    let after: Vec<_> = ["readings-enriched", "alerts", "enrich.dlq"]
        .iter()
        .map(|t| env.records(t))
        .collect();
    assert_eq!(before, after);
}
