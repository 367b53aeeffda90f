//! Logging in to the console, and what every change needs.
//!
//! - The login form takes the admin token (the one the API's bearer calls
//!   use). A right token makes a session: a random id in a cookie marked
//!   `HttpOnly` (no script reads it) and `SameSite=Strict` (no other site's
//!   page sends it), kept in memory for [`SESSION_TTL`]; the token itself is
//!   never stored in the browser. A wrong token makes nothing.
//! - Every change (a POST) needs a live session, its CSRF token (a random
//!   value of the session, sent by the pages in the `X-CSRF-Token` header),
//!   and a request that does not come from another origin: its `Origin`,
//!   when the browser sends one, must be this host's; without `Origin`,
//!   `Sec-Fetch-Site` must not be `cross-site` or `same-site` (a page of a
//!   sibling host or another port); without either, a `Referer`'s origin
//!   must be this host's. A request with none of the three (not a browser)
//!   is left to the session and the CSRF token. So another site can
//!   neither send the cookie nor know the CSRF token.
//! - Read-only pages need a session too, unless `[admin] console_public`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::Admin;
use super::pages::{Nav, page};
use crate::admin::api::same_token;

/// How long a console session lasts after logging in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// The session cookie's name.
pub const COOKIE: &str = "tidewater_session";

/// The header that carries a session's CSRF token on every change.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The console's sessions, in memory: a restarted host asks to log in again.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

#[derive(Clone)]
struct Session {
    csrf: String,
    expires: Instant,
}

impl Sessions {
    fn create(&self) -> std::io::Result<(String, Session)> {
        let id = crate::admin::random_token()?;
        let session = Session {
            csrf: crate::admin::random_token()?,
            expires: Instant::now() + SESSION_TTL,
        };
        let mut all = lock(&self.0);
        let now = Instant::now();
        all.retain(|_, s| s.expires > now);
        all.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    fn get(&self, id: &str) -> Option<Session> {
        lock(&self.0)
            .get(id)
            .filter(|s| s.expires > Instant::now())
            .cloned()
    }

    fn remove(&self, id: &str) {
        lock(&self.0).remove(id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Who looks at a page: logged in (with the session's CSRF token) or not.
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    /// The session's CSRF token; `None` when not logged in.
    pub csrf: Option<String>,
    /// The session id, for logging out.
    session: Option<String>,
}

impl Viewer {
    /// Whether this viewer may change things.
    pub fn logged_in(&self) -> bool {
        self.csrf.is_some()
    }

    /// The CSRF token for the pages' `hx-headers` ("" when not logged in).
    pub fn csrf_token(&self) -> &str {
        self.csrf.as_deref().unwrap_or("")
    }
}

fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

impl FromRequestParts<Arc<Admin>> for Viewer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        admin: &Arc<Admin>,
    ) -> Result<Self, Self::Rejection> {
        let Some(id) = session_id(&parts.headers) else {
            return Ok(Viewer::default());
        };
        Ok(match admin.sessions.get(id) {
            Some(s) => Viewer {
                csrf: Some(s.csrf),
                session: Some(id.to_owned()),
            },
            None => Viewer::default(),
        })
    }
}

/// A viewer allowed to read the console: logged in, or the console is public.
pub struct Reader(pub Viewer);

impl FromRequestParts<Arc<Admin>> for Reader {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        admin: &Arc<Admin>,
    ) -> Result<Self, Self::Rejection> {
        let Ok(viewer) = Viewer::from_request_parts(parts, admin).await;
        if viewer.logged_in() || admin.console.public {
            return Ok(Reader(viewer));
        }
        let next = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let to = format!(
            "/login?next={}",
            form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
        );
        // htmx follows `HX-Redirect`; a plain request the 303.
        let mut r = Redirect::to(&to).into_response();
        if let Ok(v) = HeaderValue::from_str(&to) {
            r.headers_mut().insert("hx-redirect", v);
        }
        Err(r)
    }
}

/// A viewer allowed to change things: a live session, its CSRF token in
/// [`CSRF_HEADER`], and a request the browser says comes from this host's
/// own pages (see the module's docs).
pub struct Changer(pub Viewer);

impl FromRequestParts<Arc<Admin>> for Changer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        admin: &Arc<Admin>,
    ) -> Result<Self, Self::Rejection> {
        if let Err(why) = same_origin(&parts.headers) {
            return Err(refusal(
                StatusCode::FORBIDDEN,
                "forbidden",
                &format!(
                    "this change came from another site's page ({why}): refused; nothing was changed"
                ),
            ));
        }
        let Ok(viewer) = Viewer::from_request_parts(parts, admin).await;
        let Some(csrf) = viewer.csrf.as_deref() else {
            return Err(refusal(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "log in with the admin token first (the session ended, or this browser never logged in); nothing was changed",
            ));
        };
        let given = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !same_token(given, csrf) {
            return Err(refusal(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the page's CSRF token is missing or stale: reload the page and try again; nothing was changed",
            ));
        }
        Ok(Changer(viewer))
    }
}

/// Whether the request comes from this host's own pages, as far as the
/// browser says: its `Origin` is this host (`http://<Host>` or
/// `https://<Host>`); without `Origin`, its `Sec-Fetch-Site` is neither
/// `cross-site` nor `same-site`; without either, its `Referer`'s origin is
/// this host. None of the three: `Ok` (not a browser; the session and the
/// CSRF token decide).
///
/// # Errors
///
/// Which header says the request came from elsewhere, in words.
fn same_origin(headers: &HeaderMap) -> Result<(), &'static str> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let is_this_host = |origin: &str| {
        host.is_some_and(|h| origin == format!("http://{h}") || origin == format!("https://{h}"))
    };
    if let Some(origin) = headers.get(header::ORIGIN) {
        return match origin.to_str() {
            Ok(o) if is_this_host(o) => Ok(()),
            _ => Err("its Origin is not this host's"),
        };
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        return match site.as_bytes() {
            b"cross-site" => Err("its Sec-Fetch-Site is cross-site"),
            b"same-site" => Err("its Sec-Fetch-Site is same-site, another host or port"),
            _ => Ok(()),
        };
    }
    if let Some(referer) = headers.get(header::REFERER) {
        return match referer.to_str().ok().and_then(origin_of) {
            Some(o) if is_this_host(o) => Ok(()),
            _ => Err("its Referer is not this host's"),
        };
    }
    Ok(())
}

/// The origin (`scheme://host[:port]`) of an absolute `url`; `None` when
/// it has no `scheme://`.
fn origin_of(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme.is_empty() || rest.is_empty() {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&url[..scheme.len() + 3 + end])
}

/// An HTML fragment saying why a change was refused, with `status`.
pub fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Html(super::pages::notice_html(false, code, message)),
    )
        .into_response()
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    nav: Nav,
    next: String,
    error: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct NextQuery {
    next: Option<String>,
}

/// Where to go after logging in: a path of this host, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/".to_owned(),
    }
}

pub(super) async fn login_page(
    State(admin): State<Arc<Admin>>,
    viewer: Viewer,
    axum::extract::Query(q): axum::extract::Query<NextQuery>,
) -> Response {
    let p = LoginPage {
        nav: Nav::new(&admin, &viewer, "login"),
        next: safe_next(q.next.as_deref()),
        error: None,
    };
    page(&p).into_response()
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct LoginForm {
    token: String,
    next: Option<String>,
}

pub(super) async fn login(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let refused = |status: StatusCode, error: String| {
        let p = LoginPage {
            nav: Nav::new(&admin, &Viewer::default(), "login"),
            next: next.clone(),
            error: Some(error),
        };
        (status, page(&p)).into_response()
    };
    if let Err(why) = same_origin(&headers) {
        return refused(
            StatusCode::FORBIDDEN,
            format!("this login came from another site's page ({why}): refused"),
        );
    }
    if !same_token(form.token.trim(), &admin.token) {
        tracing::warn!("console login refused: wrong token");
        return refused(
            StatusCode::UNAUTHORIZED,
            "that is not this host's admin token; nothing was changed. The token is in the data dir's admin.token file (or [admin] token, or TIDEWATER_ADMIN_TOKEN).".into(),
        );
    }
    let (id, _) = match admin.sessions.create() {
        Ok(s) => s,
        Err(e) => {
            return refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot make a session: {e}"),
            );
        }
    };
    tracing::info!("console login");
    let cookie = format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    let mut r = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub(super) async fn logout(State(admin): State<Arc<Admin>>, Changer(viewer): Changer) -> Response {
    if let Some(id) = &viewer.session {
        admin.sessions.remove(id);
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "tidewater_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        ),
    );
    h.insert("hx-redirect", HeaderValue::from_static("/login"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; tidewater_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(session_id(&h), Some("abc"));
        h.insert(header::COOKIE, "tidewater_sessionx=abc".parse().unwrap());
        assert_eq!(session_id(&h), None);
    }

    #[test]
    fn only_this_hosts_origin_may_change_things() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:7070".parse().unwrap());
        assert_eq!(same_origin(&h), Ok(()), "no header: the CSRF token decides");
        h.insert(header::ORIGIN, "http://127.0.0.1:7070".parse().unwrap());
        assert_eq!(same_origin(&h), Ok(()));
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert_eq!(same_origin(&h), Err("its Origin is not this host's"));
        h.insert(header::ORIGIN, "null".parse().unwrap());
        assert_eq!(same_origin(&h), Err("its Origin is not this host's"));
        // Origin decides over the other two.
        h.insert(header::ORIGIN, "http://127.0.0.1:7070".parse().unwrap());
        h.insert(header::REFERER, "http://evil.example/".parse().unwrap());
        assert_eq!(same_origin(&h), Ok(()));
    }

    #[test]
    fn without_origin_sec_fetch_site_then_referer_decide() {
        let with = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, "127.0.0.1:7070".parse().unwrap());
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            same_origin(&h)
        };
        assert_eq!(with(&[("sec-fetch-site", "same-origin")]), Ok(()));
        assert_eq!(with(&[("sec-fetch-site", "none")]), Ok(()));
        assert_eq!(
            with(&[("sec-fetch-site", "cross-site")]),
            Err("its Sec-Fetch-Site is cross-site")
        );
        assert_eq!(
            with(&[("sec-fetch-site", "same-site")]),
            Err("its Sec-Fetch-Site is same-site, another host or port")
        );
        // Sec-Fetch-Site decides over Referer.
        assert_eq!(
            with(&[
                ("sec-fetch-site", "cross-site"),
                ("referer", "http://127.0.0.1:7070/processors/probe")
            ]),
            Err("its Sec-Fetch-Site is cross-site")
        );
        assert_eq!(
            with(&[("referer", "http://127.0.0.1:7070/processors/probe?x=1")]),
            Ok(())
        );
        assert_eq!(with(&[("referer", "https://127.0.0.1:7070")]), Ok(()));
        for other in [
            "http://evil.example/processors/probe",
            "http://127.0.0.1:7071/",
            "http://127.0.0.1:7070.evil.example/",
            "/processors/probe",
            "not a url",
        ] {
            assert_eq!(
                with(&[("referer", other)]),
                Err("its Referer is not this host's"),
                "{other}"
            );
        }
    }

    #[test]
    fn origins_of_urls() {
        assert_eq!(origin_of("http://a:1/b?c#d"), Some("http://a:1"));
        assert_eq!(origin_of("https://a?x"), Some("https://a"));
        assert_eq!(origin_of("https://a#x"), Some("https://a"));
        assert_eq!(origin_of("http://"), None);
        assert_eq!(origin_of("/relative"), None);
    }

    #[test]
    fn after_login_only_paths_of_this_host() {
        assert_eq!(safe_next(Some("/processors/enrich")), "/processors/enrich");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn sessions_expire_and_go() {
        let s = Sessions::default();
        let (id, session) = s.create().unwrap();
        assert_eq!(s.get(&id).unwrap().csrf, session.csrf);
        assert_ne!(id, session.csrf);
        s.remove(&id);
        assert!(s.get(&id).is_none());
        assert!(s.get("nope").is_none());
    }
}
