//! `/metrics`: the Prometheus text format (prometheus-client), per
//! processor and version, and per sink.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::Admin;
use super::api::{ApiError, blocking};

pub(super) async fn metrics(State(admin): State<Arc<Admin>>) -> Result<Response, ApiError> {
    let text = blocking(move || render_metrics(&admin)).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

fn render_metrics(admin: &Admin) -> Result<String, ApiError> {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    type Labels = Vec<(String, String)>;
    let stats = crate::processing::stats::read_all(&admin.log)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string()))?;
    let mut reg = prometheus_client::registry::Registry::with_prefix("tidewater");
    type Get = fn(&crate::processing::stats::Counters) -> u64;
    let counters: [(&str, &str, Get); 11] = [
        ("events_in", "Events read from the inputs", |c| c.events_in),
        ("duplicates", "Events skipped as duplicates", |c| {
            c.duplicates
        }),
        (
            "conflicts",
            "Events whose key came with a different payload",
            |c| c.conflicts,
        ),
        ("outputs", "Records published", |c| c.outputs),
        (
            "dead_lettered",
            "Events sent to the dead-letter topic",
            |c| c.dead_lettered,
        ),
        ("errors", "Events the component failed on", |c| c.errors),
        (
            "restores",
            "Input partitions whose state and keys were restored from the changelog",
            |c| c.restores,
        ),
        (
            "restored_records",
            "Changelog records applied by restores",
            |c| c.restored_records,
        ),
        (
            "restore_milliseconds",
            "Time spent restoring partitions from the changelog, in ms",
            |c| c.restore_ms,
        ),
        (
            "instances_recycled",
            "Component instances discarded after a failed call and replaced",
            |c| c.recycled,
        ),
        (
            "instances_recycled_memory_limit",
            "Component instances discarded for hitting their memory cap (limits.memory_bytes)",
            |c| c.recycled_memory_limit,
        ),
    ];
    for (name, help, get) in counters {
        let fam = Family::<Labels, Counter>::default();
        for (p, s) in &stats {
            fam.get_or_create(&vec![("processor".into(), p.clone())])
                .inc_by(get(&s.counters));
        }
        reg.register(name, help, fam);
    }
    let deleted_unread = Family::<Labels, Counter>::default();
    for (p, s) in &stats {
        deleted_unread
            .get_or_create(&vec![("processor".into(), p.clone())])
            .inc_by(s.deleted_unread);
    }
    reg.register(
        "deleted_unread",
        "Records retention deleted before the processor read them (retention.unread = \"delete\")",
        deleted_unread,
    );
    let device_time = Family::<Labels, Counter>::default();
    let replaced = crate::streams::ingest::device_time::counts(admin.log.db())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string()))?;
    for (topic, t) in &replaced {
        for (reason, n) in [("ahead", t.ahead), ("behind", t.behind)] {
            device_time
                .get_or_create(&vec![
                    ("topic".into(), topic.clone()),
                    ("reason".into(), reason.into()),
                ])
                .inc_by(n);
        }
    }
    reg.register(
        "device_time_replaced",
        "Records stamped with the ingest time because their device time was out of the window",
        device_time,
    );
    let lag = Family::<Labels, Gauge>::default();
    let restore_lag = Family::<Labels, Gauge>::default();
    let swaps = Family::<Labels, Counter>::default();
    let active = Family::<Labels, Gauge>::default();
    let shadow_diff = Family::<Labels, Counter>::default();
    let shadow_compared = Family::<Labels, Counter>::default();
    for (p, m) in &admin.processors {
        let st = m.control.status();
        let l = vec![("processor".to_owned(), p.clone())];
        lag.get_or_create(&l)
            .set(stats.get(p).map_or(0, |s| s.lag) as i64);
        swaps.get_or_create(&l).inc_by(st.swaps);
        restore_lag
            .get_or_create(&l)
            .set(m.restore_lag.load(std::sync::atomic::Ordering::Relaxed) as i64);
        active
            .get_or_create(&vec![
                ("processor".to_owned(), p.clone()),
                ("version".to_owned(), st.active_version.clone()),
            ])
            .set(1);
        if let Some(s) = &st.shadow {
            shadow_compared.get_or_create(&l).inc_by(s.compared);
            shadow_diff.get_or_create(&l).inc_by(s.different);
        }
    }
    reg.register("lag", "Records in the inputs not yet read", lag);
    reg.register(
        "restore_lag",
        "Changelog records a restore in progress still has to read",
        restore_lag,
    );
    reg.register("swaps", "Versions swapped in since the host started", swaps);
    reg.register(
        "active_version",
        "1 for the version each processor runs",
        active,
    );
    reg.register(
        "shadow_compared",
        "Events compared with the shadow version",
        shadow_compared,
    );
    reg.register(
        "shadow_different",
        "Events on which the shadow differed",
        shadow_diff,
    );
    let sink_lag = Family::<Labels, Gauge>::default();
    let sink_healthy = Family::<Labels, Gauge>::default();
    for (n, sink) in &admin.sinks {
        let l = vec![
            ("sink".to_owned(), n.clone()),
            ("kind".to_owned(), sink.kind().to_owned()),
        ];
        sink_lag
            .get_or_create(&l)
            .set(stats.get(n).map_or(0, |s| s.lag) as i64);
        sink_healthy
            .get_or_create(&l)
            .set(i64::from(sink.status().unhealthy.is_none()));
    }
    reg.register(
        "sink_lag",
        "Records in a sink's topic not yet delivered (sinks count in the families above under processor=<sink>)",
        sink_lag,
    );
    reg.register(
        "sink_healthy",
        "1 while a sink delivers, 0 while it holds its position (401/403, database unreachable)",
        sink_healthy,
    );
    let live = Gauge::<i64>::default();
    live.set(admin.registry.runtime().live_instances() as i64);
    reg.register("live_instances", "Component instances alive", live);
    if let Some(ingest) = &admin.ingest {
        ingest.register(&mut reg);
    }
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(out)
}
