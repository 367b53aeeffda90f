//! The console's pages and the fragments they refresh, each rendered from
//! the same views the JSON API serialises ([`crate::admin::views`]).

use std::sync::Arc;

use askama::Template;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::auth::{Reader, Viewer};
use super::chart;
use super::fmt::Shown;
use crate::admin::api::{blocking, path_error};
use crate::admin::rates::{SAMPLE_INTERVAL, Sample};
use crate::admin::views::{
    CompareView, DeadLetterView, DeadLettersView, ProcessorView, TailView, TopicView, VersionRow,
    VersionsView,
};
use crate::admin::{Admin, ApiError};
use crate::control::registry::Activation;

/// What every page's header needs.
pub struct Nav {
    /// Whether the viewer is logged in (may change things).
    pub logged_in: bool,
    /// The session's CSRF token ("" when not logged in).
    pub csrf: String,
    /// Whether read-only pages are open without logging in.
    pub public: bool,
    /// Every processor, for the menu.
    pub processors: Vec<String>,
    /// The page (`overview`, a processor's name, `languages`, `login`, ...).
    pub current: String,
}

impl Nav {
    /// The header of a page called `current`, for `viewer`.
    pub fn new(admin: &Admin, viewer: &Viewer, current: &str) -> Nav {
        Nav {
            logged_in: viewer.logged_in(),
            csrf: viewer.csrf_token().to_owned(),
            public: admin.console.public,
            processors: admin.processors.keys().cloned().collect(),
            current: current.to_owned(),
        }
    }
}

/// Renders `t` as an HTML response.
pub fn page(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Html(notice_html(
                false,
                "internal",
                &format!("cannot render the page: {e}"),
            )),
        )
            .into_response(),
    }
}

#[derive(Template)]
#[template(path = "notice.html")]
struct Notice<'a> {
    ok: bool,
    code: &'a str,
    message: &'a str,
}

/// A notice for the result area of a form: green when `ok`, else red with
/// the stable `code` and the message in words.
pub fn notice_html(ok: bool, code: &str, message: &str) -> String {
    Notice { ok, code, message }
        .render()
        .unwrap_or_else(|_| "<div class=\"notice error\">cannot render the notice</div>".into())
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    nav: Nav,
    code: &'static str,
    message: String,
}

/// A page that says what went wrong, with the API error's status.
pub fn error_page(admin: &Admin, viewer: &Viewer, e: ApiError) -> Response {
    let p = ErrorPage {
        nav: Nav::new(admin, viewer, "error"),
        code: e.code,
        message: e.message,
    };
    (e.status, page(&p)).into_response()
}

/// One row of the overview's processors table.
pub struct ProcessorRow {
    /// The processor.
    pub v: ProcessorView,
    /// Its events/s in the last sample.
    pub events_per_s: f64,
    /// Its chart over the samples kept.
    pub chart: String,
}

/// The overview's processors table: rendered into the page and sent again
/// with every new sample over server-sent events.
#[derive(Template)]
#[template(path = "processors.html")]
pub struct ProcessorsFragment {
    /// One row per processor.
    pub rows: Vec<ProcessorRow>,
    /// The span the charts cover, in s.
    pub seconds: u64,
}

impl ProcessorsFragment {
    /// The table for `views`, with charts from `samples`.
    pub fn new(views: Vec<ProcessorView>, samples: &[Sample]) -> Self {
        let rows = views
            .into_iter()
            .map(|v| {
                let series = |f: fn(&crate::admin::rates::Point) -> f64| -> Vec<f64> {
                    samples
                        .iter()
                        .map(|s| s.processors.get(&v.name).map_or(0.0, f))
                        .collect()
                };
                let rate = series(|p| p.events_per_s);
                let lag = series(|p| p.lag as f64);
                ProcessorRow {
                    events_per_s: rate.last().copied().unwrap_or(0.0),
                    chart: chart::sparkline(&rate, &lag, self::span_seconds(samples)),
                    v,
                }
            })
            .collect();
        ProcessorsFragment {
            rows,
            seconds: span_seconds(samples),
        }
    }

    /// The state's CSS class: `running`, `paused`, `stopped` or `failed`.
    pub fn state_class(&self, state: &str) -> &'static str {
        match state.split(':').next().unwrap_or("") {
            "running" => "running",
            "paused" => "paused",
            "stopped" => "stopped",
            _ => "failed",
        }
    }
}

fn span_seconds(samples: &[Sample]) -> u64 {
    match (samples.first(), samples.last()) {
        (Some(a), Some(b)) => {
            (b.at_ms.saturating_sub(a.at_ms) / 1000).max(SAMPLE_INTERVAL.as_secs())
        }
        _ => 0,
    }
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    nav: Nav,
    processors: String,
    topics: Vec<TopicView>,
    ingest: Option<String>,
}

pub(super) async fn overview(State(admin): State<Arc<Admin>>, Reader(viewer): Reader) -> Response {
    let a = admin.clone();
    let data = blocking(move || Ok((a.processors_view()?, a.topics_view()?))).await;
    let (views, topics) = match data {
        Ok(d) => d,
        Err(e) => return error_page(&admin, &viewer, e),
    };
    let fragment = ProcessorsFragment::new(views, &admin.rates.samples());
    let p = OverviewPage {
        nav: Nav::new(&admin, &viewer, "overview"),
        processors: fragment.render().unwrap_or_default(),
        topics,
        ingest: None,
    };
    page(&p)
}

/// The status panel of a processor's page: refreshed every 2 s and after
/// every change.
#[derive(Template)]
#[template(path = "panel.html")]
struct PanelFragment {
    v: ProcessorView,
    can_change: bool,
}

impl PanelFragment {
    fn canary_share(&self) -> String {
        self.v.canary.as_ref().map_or_else(String::new, |c| {
            super::fmt::dec(&(c.plan.max_error_rate * 100.0))
        })
    }
}

/// A processor's versions and activation history: refreshed after every change.
#[derive(Template)]
#[template(path = "versions.html")]
struct VersionsFragment {
    name: String,
    rows: Vec<VersionRow>,
    history: Vec<Activation>,
    can_change: bool,
}

impl VersionsFragment {
    fn new(v: VersionsView, can_change: bool) -> Self {
        let mut history = v.history;
        history.reverse();
        VersionsFragment {
            name: v.processor,
            rows: v.versions.into_iter().rev().collect(),
            history,
            can_change,
        }
    }

    fn reason_text(&self, reason: &str) -> String {
        match reason {
            "start" => "started with it".into(),
            "activate" => "activated".into(),
            "rollback" => "rolled back to it".into(),
            "watch" => "deployed from the watched directory".into(),
            other => other.to_owned(),
        }
    }
}

#[derive(Template)]
#[template(path = "processor.html")]
struct ProcessorPage {
    nav: Nav,
    name: String,
    panel: String,
    versions: String,
    max_upload: String,
}

pub(super) async fn processor(
    State(admin): State<Arc<Admin>>,
    Reader(viewer): Reader,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let (a, n) = (admin.clone(), name.clone());
    let data = blocking(move || Ok((a.one_processor_view(&n)?, a.versions_view(&n)?))).await;
    let (v, versions) = match data {
        Ok(d) => d,
        Err(e) => return error_page(&admin, &viewer, e),
    };
    let can_change = viewer.logged_in();
    let p = ProcessorPage {
        nav: Nav::new(&admin, &viewer, &name),
        panel: PanelFragment { v, can_change }.render().unwrap_or_default(),
        versions: VersionsFragment::new(versions, can_change)
            .render()
            .unwrap_or_default(),
        max_upload: super::fmt::size(&(admin.max_upload_bytes as u64)),
        name,
    };
    page(&p)
}

pub(super) async fn panel(
    State(admin): State<Arc<Admin>>,
    Reader(viewer): Reader,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let a = admin.clone();
    match blocking(move || a.one_processor_view(&name)).await {
        Ok(v) => page(&PanelFragment {
            v,
            can_change: viewer.logged_in(),
        }),
        Err(e) => fragment_error(e),
    }
}

pub(super) async fn versions(
    State(admin): State<Arc<Admin>>,
    Reader(viewer): Reader,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let a = admin.clone();
    match blocking(move || a.versions_view(&name)).await {
        Ok(v) => page(&VersionsFragment::new(v, viewer.logged_in())),
        Err(e) => fragment_error(e),
    }
}

/// An API error as a notice, for a fragment's place.
pub fn fragment_error(e: ApiError) -> Response {
    (e.status, Html(notice_html(false, e.code, &e.message))).into_response()
}

#[derive(Template)]
#[template(path = "dead_letters.html")]
struct DeadLettersPage {
    nav: Nav,
    view: DeadLettersView,
    versions: Vec<VersionRow>,
    can_change: bool,
}

impl DeadLettersPage {
    fn replay_text(&self, d: &DeadLetterView) -> String {
        replay_text(d)
    }
}

/// What became of a dead letter, in words.
fn replay_text(d: &DeadLetterView) -> String {
    match (&d.replayed, d.replayable) {
        (Some(r), _) => match &r.failed {
            None => format!(
                "replayed by version {} at {}",
                super::fmt::short(&r.version),
                super::fmt::time(&r.at_ms)
            ),
            Some(why) => format!(
                "failed again with version {} at {} ({why}); another version may replay it",
                super::fmt::short(&r.version),
                super::fmt::time(&r.at_ms)
            ),
        },
        (None, true) => "not replayed yet".into(),
        (None, false) => "cannot be replayed: no code changes a conflict or a missing key".into(),
    }
}

/// `?kind=...&limit=...` of the dead-letters page.
#[derive(Debug, Deserialize)]
pub(super) struct DeadLettersQuery {
    kind: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn dead_letters(
    State(admin): State<Arc<Admin>>,
    Reader(viewer): Reader,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<DeadLettersQuery>,
) -> Response {
    let (a, n) = (admin.clone(), name.clone());
    let kind = q.kind.filter(|k| !k.is_empty());
    let limit = q.limit.unwrap_or(100);
    let data = blocking(move || {
        Ok((
            a.dead_letters_view(&n, kind.as_deref(), limit)?,
            a.versions_view(&n)?,
        ))
    })
    .await;
    let (view, versions) = match data {
        Ok(d) => d,
        Err(e) => return error_page(&admin, &viewer, e),
    };
    let p = DeadLettersPage {
        nav: Nav::new(&admin, &viewer, &name),
        view,
        versions: versions.versions.into_iter().rev().collect(),
        can_change: viewer.logged_in(),
    };
    page(&p)
}

#[derive(Template)]
#[template(path = "dead_letter.html")]
struct DeadLetterPage {
    nav: Nav,
    name: String,
    topic: String,
    d: DeadLetterView,
    shown: Option<Shown>,
    status: String,
    versions: Vec<VersionRow>,
    can_change: bool,
}

pub(super) async fn dead_letter(
    State(admin): State<Arc<Admin>>,
    Reader(viewer): Reader,
    path: Result<UrlPath<(String, u32, u64)>, PathRejection>,
) -> Response {
    let (name, partition, offset) = match path {
        Ok(UrlPath(p)) => p,
        Err(r) => return error_page(&admin, &viewer, path_error(r)),
    };
    let (a, n) = (admin.clone(), name.clone());
    let data = blocking(move || {
        Ok((
            a.dead_letter_view(&n, partition, offset)?,
            a.versions_view(&n)?,
            a.one_processor_view(&n)?.dead_letter_topic,
        ))
    })
    .await;
    let (d, versions, topic) = match data {
        Ok(d) => d,
        Err(e) => return error_page(&admin, &viewer, e),
    };
    let p = DeadLetterPage {
        nav: Nav::new(&admin, &viewer, &name),
        shown: d.raw.as_ref().map(Shown::of),
        status: replay_text(&d),
        d,
        name,
        topic,
        versions: versions.versions.into_iter().rev().collect(),
        can_change: viewer.logged_in(),
    };
    page(&p)
}

#[derive(Template)]
#[template(path = "topic.html")]
struct TopicPage {
    nav: Nav,
    t: TopicView,
    tail: TailView,
    shown: Vec<Shown>,
    max: usize,
    partition: Option<u32>,
}

impl TopicPage {
    fn chosen(&self, partition: &usize) -> bool {
        self.partition == Some(*partition as u32)
    }
}

/// `?max=...&partition=...` of the topic page.
#[derive(Debug, Deserialize)]
pub(super) struct TopicQuery {
    max: Option<usize>,
    partition: Option<String>,
}

pub(super) async fn topic(
    State(admin): State<Arc<Admin>>,
    Reader(viewer): Reader,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<TopicQuery>,
) -> Response {
    let max = q.max.unwrap_or(20).clamp(1, crate::admin::views::MAX_TAIL);
    let partition = q.partition.and_then(|p| p.parse::<u32>().ok());
    let a = admin.clone();
    let data = blocking(move || {
        let tail = a.tail_view(&name, max, partition)?;
        let t = a
            .topics_view()?
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| ApiError::bad_request(format!("no topic {name:?}")))?;
        Ok((t, tail))
    })
    .await;
    let (t, tail) = match data {
        Ok(d) => d,
        Err(e) => return error_page(&admin, &viewer, e),
    };
    let p = TopicPage {
        nav: Nav::new(&admin, &viewer, "topic"),
        shown: tail.records.iter().map(|r| Shown::of(&r.raw)).collect(),
        t,
        tail,
        max,
        partition,
    };
    page(&p)
}

#[derive(Template)]
#[template(path = "languages.html")]
struct LanguagesPage {
    nav: Nav,
    report: Option<CompareView>,
    missing: Option<ApiError>,
    charts: Vec<String>,
}

/// The languages' bar charts: size, cold and cached load, events/s, p99.
fn language_charts(v: &CompareView) -> Vec<String> {
    use super::fmt::{dec, num};
    type Metric = (
        &'static str,
        fn(&crate::admin::views::CompareRow) -> f64,
        fn(f64) -> String,
    );
    let metrics: [Metric; 5] = [
        (
            "component size, bytes",
            |r| r.wasm_bytes as f64,
            |x| num(&(x as u64)),
        ),
        ("cold load (compile), ms", |r| r.compile_ms, |x| dec(&x)),
        ("cached load, ms", |r| r.cached_load_ms, |x| dec(&x)),
        ("events per second", |r| r.events_per_s, |x| dec(&x)),
        ("p99 of one pipeline step, ms", |r| r.p99_ms, |x| dec(&x)),
    ];
    metrics
        .iter()
        .map(|(title, get, text)| {
            let rows: Vec<(String, f64, String)> = v
                .rows
                .iter()
                .map(|r| (r.language.clone(), get(r), text(get(r))))
                .collect();
            chart::bars(title, &rows)
        })
        .collect()
}

pub(super) async fn languages(State(admin): State<Arc<Admin>>, Reader(viewer): Reader) -> Response {
    let a = admin.clone();
    let (report, missing) = match blocking(move || a.compare_view()).await {
        Ok(r) => (Some(r), None),
        Err(e) => (None, Some(e)),
    };
    let p = LanguagesPage {
        nav: Nav::new(&admin, &viewer, "languages"),
        charts: report.as_ref().map(language_charts).unwrap_or_default(),
        report,
        missing,
    };
    page(&p)
}
