//! The console's changes: each a POST from a logged-in page ([`Changer`]),
//! each calling the same [`Admin`] function as the JSON API, each answering
//! with a notice in words (green, or red with the error's code) and an
//! `HX-Trigger: tidewater-changed` header that makes the page's status and
//! versions refresh.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Multipart, Path as UrlPath, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::auth::Changer;
use super::fmt::{dec, short, size};
use super::pages::{fragment_error, notice_html};
use crate::admin::api::{blocking, canary, parse_config};
use crate::admin::ops::Then;
use crate::admin::{Admin, ApiError};
use crate::control::CanaryPlan;
use crate::control::registry::UploadError;
use crate::text::clip;

/// The event the pages listen to for refreshing after a change.
pub const CHANGED: &str = "tidewater-changed";

/// A green notice, and the pages' refresh.
fn done(message: &str) -> Response {
    let mut r = Html(notice_html(true, "ok", message)).into_response();
    r.headers_mut()
        .insert("hx-trigger", HeaderValue::from_static(CHANGED));
    r
}

fn answer(result: Result<String, ApiError>) -> Response {
    match result {
        Ok(message) => done(&message),
        Err(e) => fragment_error(e),
    }
}

fn canary_words(plan: &CanaryPlan) -> String {
    format!(
        "as a canary: if more than {}% of its first {} processed events fail, the previous version comes back by itself",
        dec(&(plan.max_error_rate * 100.0)),
        plan.events
    )
}

/// A canary from the form's `canary_events` and `canary_percent` (both
/// empty: none).
fn form_canary(
    events: Option<&str>,
    percent: Option<&str>,
) -> Result<Option<CanaryPlan>, ApiError> {
    fn blank(s: Option<&str>) -> Option<&str> {
        s.map(str::trim).filter(|s| !s.is_empty())
    }
    let (events, percent) = (blank(events), blank(percent));
    let events = events
        .map(|e| {
            e.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("canary events {e:?} is not a whole number"))
            })
        })
        .transpose()?;
    let rate = percent
        .map(|p| match p.parse::<f64>() {
            Ok(x) if (0.0..=100.0).contains(&x) => Ok(x / 100.0),
            _ => Err(ApiError::bad_request(format!(
                "canary error rate {p:?} is not a percentage from 0 to 100"
            ))),
        })
        .transpose()?;
    canary(events, rate)
}

/// What the upload form sends.
#[derive(Default)]
struct UploadForm {
    file: Option<(String, Vec<u8>)>,
    then: String,
    canary_events: Option<String>,
    canary_percent: Option<String>,
    config: Option<String>,
}

/// Reads the upload form, refusing a file over `limit` bytes as the API does.
async fn read_upload(mut form: Multipart, limit: usize) -> Result<UploadForm, ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::bad_request(format!("the upload form did not arrive whole: {e}"))
    };
    let mut out = UploadForm::default();
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or("").to_owned();
        if name == "file" {
            let file_name = field.file_name().unwrap_or("").to_owned();
            let mut bytes = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(bad)? {
                if bytes.len() + chunk.len() > limit {
                    // Reading stops here: the file's whole size is unknown.
                    return Err(UploadError::TooLarge {
                        size_bytes: None,
                        limit_bytes: limit as u64,
                    }
                    .into());
                }
                bytes.extend_from_slice(&chunk);
            }
            out.file = Some((file_name, bytes));
            continue;
        }
        let text = field.text().await.map_err(bad)?;
        match name.as_str() {
            "then" => out.then = text,
            "canary_events" => out.canary_events = Some(text),
            "canary_percent" => out.canary_percent = Some(text),
            "config" => out.config = Some(text),
            _ => {}
        }
    }
    Ok(out)
}

pub(super) async fn upload(
    State(admin): State<Arc<Admin>>,
    Changer(_): Changer,
    UrlPath(name): UrlPath<String>,
    form: Multipart,
) -> Response {
    let result = async {
        admin.processor(&name)?;
        let f = read_upload(form, admin.max_upload_bytes).await?;
        // No file chosen: the browser sends the field with no name and no bytes.
        let Some((file_name, bytes)) = f
            .file
            .filter(|(name, b)| !(name.is_empty() && b.is_empty()))
        else {
            return Err(ApiError::bad_request(
                "choose a .wasm file first (drop it on the box, or click it to pick one)",
            ));
        };
        if bytes.is_empty() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                UploadError::Empty.code(),
                format!(
                    "{} is empty (0 bytes): choose the component's built .wasm file; nothing was uploaded",
                    clip(&file_name)
                ),
            ));
        }
        let then = match f.then.as_str() {
            "activate" => Then::Activate(form_canary(
                f.canary_events.as_deref(),
                f.canary_percent.as_deref(),
            )?),
            "shadow" => Then::Shadow,
            _ => Then::Keep,
        };
        let config = match f.config.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(parse_config(text)?),
        };
        let (a, n) = (admin.clone(), name.clone());
        let info = blocking(move || a.deploy(&n, &bytes, config, then)).await?;
        let what = format!(
            "Uploaded {file_name} as version {} ({}, {})",
            short(&info.sha256),
            info.language.as_deref().unwrap_or("language not named"),
            size(&info.size_bytes)
        );
        Ok(match then {
            Then::Keep => format!("{what}. It is kept, not running: activate it from the versions table."),
            Then::Activate(None) => format!("{what}; it becomes active at the next batch boundary."),
            Then::Activate(Some(plan)) => format!("{what}; it becomes active at the next batch boundary, {}.", canary_words(&plan)),
            Then::Shadow => format!("{what}; it now runs as a shadow: it gets the same events, its outputs are compared and never published."),
        })
    }
    .await;
    answer(result)
}

/// A form naming a version, optionally with a canary.
#[derive(Debug, Deserialize)]
pub(super) struct VersionForm {
    version: Option<String>,
    canary_events: Option<String>,
    canary_percent: Option<String>,
}

pub(super) async fn activate(
    State(admin): State<Arc<Admin>>,
    Changer(_): Changer,
    UrlPath(name): UrlPath<String>,
    axum::Form(f): axum::Form<VersionForm>,
) -> Response {
    let result = async {
        let version = f
            .version
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::bad_request("choose the version to activate"))?;
        let plan = form_canary(f.canary_events.as_deref(), f.canary_percent.as_deref())?;
        let a = admin.clone();
        let sha = blocking(move || a.activate(&name, &version, "activate", plan)).await?;
        Ok(match plan {
            None => format!(
                "Version {} becomes active at the next batch boundary.",
                short(&sha)
            ),
            Some(p) => format!(
                "Version {} becomes active at the next batch boundary, {}.",
                short(&sha),
                canary_words(&p)
            ),
        })
    }
    .await;
    answer(result)
}

pub(super) async fn rollback(
    State(admin): State<Arc<Admin>>,
    Changer(_): Changer,
    UrlPath(name): UrlPath<String>,
    axum::Form(f): axum::Form<VersionForm>,
) -> Response {
    let a = admin.clone();
    let version = f.version.filter(|v| !v.is_empty());
    let result = blocking(move || a.rollback(&name, version))
        .await
        .map(|sha| {
            format!(
                "Rolling back to version {} at the next batch boundary.",
                short(&sha)
            )
        });
    answer(result)
}

pub(super) async fn pause(
    State(admin): State<Arc<Admin>>,
    Changer(_): Changer,
    UrlPath(name): UrlPath<String>,
) -> Response {
    answer(admin.processor(&name).map(|m| {
        m.control.set_paused(true);
        format!("{name} pauses at the next batch boundary; its lag grows until you resume it.")
    }))
}

pub(super) async fn resume(
    State(admin): State<Arc<Admin>>,
    Changer(_): Changer,
    UrlPath(name): UrlPath<String>,
) -> Response {
    answer(admin.processor(&name).map(|m| {
        m.control.set_paused(false);
        format!("{name} resumes from where it paused.")
    }))
}

pub(super) async fn shadow(
    State(admin): State<Arc<Admin>>,
    Changer(_): Changer,
    UrlPath(name): UrlPath<String>,
    axum::Form(f): axum::Form<VersionForm>,
) -> Response {
    let result = async {
        let version = f
            .version
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::bad_request("choose the version to shadow"))?;
        let a = admin.clone();
        let sha = blocking(move || a.shadow(&name, &version)).await?;
        Ok(format!(
            "Version {} runs as a shadow from the next batch: it gets the same events, its outputs are compared and never published.",
            short(&sha)
        ))
    }
    .await;
    answer(result)
}

pub(super) async fn stop_shadow(
    State(admin): State<Arc<Admin>>,
    Changer(_): Changer,
    UrlPath(name): UrlPath<String>,
) -> Response {
    answer(admin.processor(&name).map(|m| {
        m.control.set_shadow(None);
        "The shadow stops at the next batch boundary.".to_owned()
    }))
}

/// What a replay form asks: the positions (`None`: every dead letter) and
/// the version to replay through (`None`: the active one).
type ReplayChoice = (Option<Vec<(u32, u64)>>, Option<String>);

/// The replay form: `pos=PARTITION:OFFSET` once per selected dead letter,
/// `scope=selected|all`, `through=active|<version>`.
fn replay_form(body: &[u8]) -> Result<ReplayChoice, ApiError> {
    let mut positions = Vec::new();
    let (mut all, mut through) = (false, None);
    for (k, v) in form_urlencoded::parse(body) {
        match &*k {
            "pos" => {
                let parsed = v
                    .split_once(':')
                    .and_then(|(p, o)| Some((p.parse().ok()?, o.parse().ok()?)));
                positions.push(parsed.ok_or_else(|| {
                    ApiError::bad_request(format!("{v:?} is not a dead letter's PARTITION:OFFSET"))
                })?);
            }
            "scope" => all = v == "all",
            "through" if v != "active" && !v.is_empty() => through = Some(v.into_owned()),
            _ => {}
        }
    }
    Ok(((!all).then_some(positions), through))
}

pub(super) async fn replay(
    State(admin): State<Arc<Admin>>,
    Changer(_): Changer,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> Response {
    let result = async {
        let (positions, through) = replay_form(&body)?;
        let s = admin.replay_dead_letters(&name, positions, through).await?;
        Ok(format!(
            "{} of {} dead letters replayed through version {}: {} outputs published to where {name}'s go; {} failed again (recorded for this version); {} still transient (tried again next time); {} settled before; {} cannot be replayed (conflicts, missing keys).",
            s.replayed,
            s.dead_letters,
            short(&s.version),
            s.outputs,
            s.failed,
            s.transient,
            s.already_done,
            s.not_replayable
        ))
    }
    .await;
    answer(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replay_form_reads_positions_scope_and_version() {
        let (p, v) = replay_form(b"pos=0%3A4&pos=1:7&through=active").unwrap();
        assert_eq!(p, Some(vec![(0, 4), (1, 7)]));
        assert_eq!(v, None);
        let (p, v) = replay_form(b"scope=all&through=abcdef12").unwrap();
        assert_eq!(p, None);
        assert_eq!(v.as_deref(), Some("abcdef12"));
        let e = replay_form(b"pos=x").unwrap_err();
        assert!(e.message.contains("\"x\" is not"), "{}", e.message);
    }

    #[test]
    fn canaries_from_the_form_are_percent_and_both_or_none() {
        assert_eq!(form_canary(Some(""), Some(" ")).unwrap(), None);
        assert_eq!(
            form_canary(Some("100"), Some("5")).unwrap(),
            Some(CanaryPlan {
                events: 100,
                max_error_rate: 0.05
            })
        );
        assert!(form_canary(Some("100"), None).is_err());
        assert!(form_canary(Some("x"), Some("5")).is_err());
        let e = form_canary(Some("10"), Some("150")).unwrap_err();
        assert_eq!(
            e.message,
            "canary error rate \"150\" is not a percentage from 0 to 100"
        );
    }
}
