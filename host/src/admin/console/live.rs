//! The overview's live table: a server-sent event `processors` with the
//! table's HTML after every sample (every second), until the page closes
//! or the host stops.

use std::convert::Infallible;
use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;

use super::auth::Reader;
use super::pages::ProcessorsFragment;
use crate::admin::Admin;
use crate::admin::api::blocking;

/// The name of the event that carries the processors table.
pub const EVENT: &str = "processors";

pub(super) async fn processors(
    State(admin): State<Arc<Admin>>,
    Reader(_): Reader,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let ticks = admin.rates.subscribe();
    let closing = admin.closing.subscribe();
    let stream = futures_util::stream::unfold(
        (admin, ticks, closing),
        |(admin, mut ticks, mut closing)| async move {
            if *closing.borrow() {
                return None;
            }
            tokio::select! {
                changed = ticks.changed() => changed.ok()?,
                _ = closing.changed() => return None,
            }
            let a = admin.clone();
            let html = match blocking(move || a.processors_view()).await {
                Ok(views) => ProcessorsFragment::new(views, &admin.rates.samples())
                    .render()
                    .unwrap_or_default(),
                Err(e) => super::pages::notice_html(false, e.code, &e.message),
            };
            let event = Event::default().event(EVENT).data(html);
            Some((Ok(event), (admin, ticks, closing)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}
