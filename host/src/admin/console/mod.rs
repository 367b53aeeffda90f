//! The web console, served by `run --admin` at `/` on the API's listener.
//!
//! Server-rendered HTML (askama templates compiled into the binary, in
//! `templates/`) with htmx for the parts that change without a reload;
//! htmx and its server-sent-events extension are vendored in `static/`
//! (versions and checksums in `static/VENDORED.md`) and embedded: nothing
//! is fetched from anywhere at run time. Every page is rendered from the
//! same functions the JSON API serialises ([`crate::admin::views`]) and
//! every change calls the same function as the API ([`crate::admin::ops`]).
//!
//! Pages: the overview (`/`: processors with a live chart of events/s and
//! lag, topics), a processor (`/processors/NAME`: status, versions,
//! upload, activate, roll back, pause, resume, shadow, canary), its dead
//! letters (`/processors/NAME/dead-letters`, one at
//! `.../dead-letters/PARTITION/OFFSET`, replay), a topic (`/topics/NAME`:
//! its last records and which version processed each), and the languages
//! side by side (`/languages`, from `make compare`'s report).
//!
//! Who may do what: see [`auth`].

mod actions;
pub mod auth;
mod chart;
pub mod fmt;
mod live;
mod pages;

use std::sync::Arc;

use axum::Router;
use axum::extract::Path as UrlPath;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use auth::Sessions;

use super::Admin;

/// The console's routes (state: the [`Admin`]).
pub(super) fn router() -> Router<Arc<Admin>> {
    use pages::*;
    Router::new()
        .route("/", get(overview))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/languages", get(languages))
        .route("/topics/{name}", get(topic))
        .route("/processors/{name}", get(processor))
        .route("/processors/{name}/panel", get(panel))
        .route("/processors/{name}/versions-table", get(versions))
        .route("/processors/{name}/dead-letters", get(dead_letters))
        .route(
            "/processors/{name}/dead-letters/{partition}/{offset}",
            get(dead_letter),
        )
        .route("/processors/{name}/upload", post(actions::upload))
        .route("/processors/{name}/activate", post(actions::activate))
        .route("/processors/{name}/rollback", post(actions::rollback))
        .route("/processors/{name}/pause", post(actions::pause))
        .route("/processors/{name}/resume", post(actions::resume))
        .route("/processors/{name}/shadow", post(actions::shadow))
        .route("/processors/{name}/shadow/stop", post(actions::stop_shadow))
        .route(
            "/processors/{name}/dead-letters/replay",
            post(actions::replay),
        )
        .route("/console/live", get(live::processors))
        .route("/console/static/{file}", get(static_file))
        .layer(axum::middleware::map_response(security_headers))
}

/// Pages run only this host's scripts and cannot be framed by another site.
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// The embedded static files: (name, content type, bytes).
const STATIC: [(&str, &str, &[u8]); 4] = [
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("static/htmx.min.js"),
    ),
    (
        "htmx-ext-sse.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("static/htmx-ext-sse.min.js"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("static/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("static/console.css"),
    ),
];

async fn static_file(UrlPath(file): UrlPath<String>) -> Response {
    match STATIC.iter().find(|(name, _, _)| *name == file) {
        Some((_, kind, bytes)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            *bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}
