//! What the console and the JSON API refuse, and how they say it, over
//! plain HTTP/1.1 written by hand on a TCP socket (so that each request has
//! exactly the headers a browser, or an attacker's page, would send): empty
//! and oversized uploads, echoed input clipped to 80 characters, and
//! changes from another site's page told apart by `Origin`,
//! `Sec-Fetch-Site` and `Referer`.

use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::{Value, json};

use crate::common::*;
use crate::deploy::{Host, TOKEN};

/// An HTTP reply: status, headers (names lowercase) and body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(500)])
            )
        })
    }

    /// The body's text as a browser shows it: tags dropped, entities read.
    fn text(&self) -> String {
        let html = String::from_utf8_lossy(&self.body);
        let mut out = String::new();
        let mut in_tag = false;
        for c in html.chars() {
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                c if !in_tag => out.push(c),
                _ => {}
            }
        }
        out.replace("&#x27;", "'")
            .replace("&#39;", "'")
            .replace("&quot;", "\"")
            .replace("&#x22;", "\"")
            .replace("&#34;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
            .trim()
            .to_owned()
    }
}

/// Sends one request to the host at `url` (`http://ADDR`) with `headers`
/// (Host, Connection and the body's length are added) and reads the reply.
/// `chunked`: the body goes in one chunk with no Content-Length, as a
/// streaming client sends it.
fn send(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    chunked: bool,
) -> Reply {
    let addr = url.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    let mut request = Vec::new();
    if chunked {
        head.push_str("Transfer-Encoding: chunked\r\n\r\n");
        request.extend_from_slice(head.as_bytes());
        request.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
        request.extend_from_slice(body);
        request.extend_from_slice(b"\r\n0\r\n\r\n");
    } else {
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        request.extend_from_slice(head.as_bytes());
        request.extend_from_slice(body);
    }
    // The host may answer before it has read the whole body: write on the
    // side, and let a write it stopped reading fail.
    let mut writer = s.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        let _ = writer.write_all(&request);
    });
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let _ = sending.join();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no reply head: {}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        body = unchunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn unchunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..eol])
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

/// A logged-in console session: its cookie and its pages' CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

fn log_in(host: &Host) -> Session {
    let r = send(
        &host.url,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        format!("token={TOKEN}&next=%2F").as_bytes(),
        false,
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let cookie = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("tidewater_session="), "{cookie}");
    let page = send(
        &host.url,
        "GET",
        "/processors/probe",
        &[("Cookie", &cookie)],
        b"",
        false,
    );
    assert_eq!(page.status, 200);
    let html = String::from_utf8_lossy(&page.body);
    let csrf = html
        .split_once("\"X-CSRF-Token\": \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(token, _)| token.to_owned())
        .unwrap_or_else(|| panic!("no CSRF token on the page"));
    assert_eq!(csrf.len(), 64);
    Session { cookie, csrf }
}

impl Session {
    /// A console change as the console's own page sends it (same-origin
    /// fetch: `Sec-Fetch-Site: same-origin`, no Origin on some browsers),
    /// plus `extra` headers.
    fn post(
        &self,
        host: &Host,
        path: &str,
        content_type: &str,
        body: &[u8],
        extra: &[(&str, &str)],
    ) -> Reply {
        let mut headers = vec![
            ("Cookie", self.cookie.as_str()),
            ("X-CSRF-Token", self.csrf.as_str()),
            ("Content-Type", content_type),
        ];
        headers.extend_from_slice(extra);
        send(&host.url, "POST", path, &headers, body, false)
    }

    fn upload(&self, host: &Host, file_name: &str, bytes: &[u8]) -> Reply {
        let (form, content_type) = multipart(file_name, bytes);
        self.post(host, "/processors/probe/upload", &content_type, &form, &[])
    }
}

/// The console's upload form: `file` (named `file_name`) and `then=keep`.
fn multipart(file_name: &str, bytes: &[u8]) -> (Vec<u8>, String) {
    let boundary = "----tidewater-test-boundary";
    let mut b = Vec::new();
    b.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: application/wasm\r\n\r\n"
        )
        .as_bytes(),
    );
    b.extend_from_slice(bytes);
    b.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"then\"\r\n\r\nkeep\r\n--{boundary}--\r\n"
        )
        .as_bytes(),
    );
    (b, format!("multipart/form-data; boundary={boundary}"))
}

fn versions(host: &Host) -> usize {
    host.get("/v1/processors/probe/versions")["versions"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn an_empty_wasm_is_refused_as_empty_by_name_in_the_console_and_the_api() {
    let env = Env::new();
    let host = Host::start(&env, &probe_config(&env, ""), |_| {});
    let session = log_in(&host);

    let r = session.upload(&host, "empty.wasm", b"");
    assert_eq!(
        (r.status, r.text()),
        (
            422,
            "Refused empty-component empty.wasm is empty (0 bytes): choose the component's built .wasm file; nothing was uploaded".to_owned()
        )
    );
    // No file chosen at all: the browser sends a nameless, empty field.
    let r = session.upload(&host, "", b"");
    assert_eq!(
        (r.status, r.text()),
        (
            400,
            "Refused bad-request choose a .wasm file first (drop it on the box, or click it to pick one)".to_owned()
        )
    );
    // The API: the same refusal, without a file name to give.
    let (status, v) = host.upload("probe", b"", "");
    assert_eq!(
        (status, &v),
        (
            422,
            &json!({"error": {
                "code": "empty-component",
                "message": "the component is empty (0 bytes): send the .wasm file's bytes; nothing was uploaded"
            }})
        )
    );
    assert_eq!(versions(&host), 1);
}

#[test]
fn a_component_over_the_limit_is_more_than_the_limit_when_its_size_is_unknown() {
    let env = Env::new();
    let host = Host::start(&env, &probe_config(&env, ""), |a| {
        a.max_upload_bytes = 128 << 10;
    });
    let session = log_in(&host);
    let big = vec![7u8; 200_000];
    // The console reads the form's file until the limit: its size is unknown.
    let r = session.upload(&host, "big.wasm", &big);
    assert_eq!(
        (r.status, r.text()),
        (
            413,
            "Refused component-too-large component is more than 128 KiB (131072 bytes), the upload limit".to_owned()
        )
    );
    // The API with a Content-Length: the size is known before reading.
    let (status, v) = host.upload("probe", &big, "");
    assert_eq!(
        (status, v["error"]["message"].as_str()),
        (
            413,
            Some("component is 200000 bytes, the upload limit is 128 KiB (131072 bytes)")
        )
    );
    // The API with a chunked body: reading stops at the limit.
    let auth = format!("Bearer {TOKEN}");
    let r = send(
        &host.url,
        "POST",
        "/v1/processors/probe/versions",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/wasm"),
        ],
        &big,
        true,
    );
    assert_eq!(
        (r.status, r.json()),
        (
            413,
            json!({"error": {
                "code": "component-too-large",
                "message": "component is more than 128 KiB (131072 bytes), the upload limit"
            }})
        )
    );
    assert_eq!(versions(&host), 1);
}

#[test]
fn errors_quote_at_most_80_characters_of_what_was_sent() {
    let env = Env::new();
    let host = Host::start(&env, &probe_config(&env, ""), |_| {});
    let session = log_in(&host);
    let long = "a".repeat(500_000);
    let shown = format!("\"{}…\" (500000 bytes)", "a".repeat(80));
    let auth = format!("Bearer {TOKEN}");
    let api = |method: &str, path: &str, body: &[u8]| {
        let r = send(
            &host.url,
            method,
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body,
            false,
        );
        (r.status, r.json())
    };

    // A 500 KB version in a JSON body.
    let body = serde_json::to_vec(&json!({ "version": long })).unwrap();
    let expected = json!({"error": {
        "code": "bad-version",
        "message": format!("version {shown}: a prefix needs 8 to 64 hex digits, this has 500000")
    }});
    assert_eq!(
        api("POST", "/v1/processors/probe/activate", &body),
        (400, expected)
    );
    // A 500 KB field name (serde quotes it in backticks).
    let body = format!("{{\"{long}\": 1}}");
    let (status, v) = api(
        "POST",
        "/v1/processors/probe/dead-letters/replay",
        body.as_bytes(),
    );
    assert_eq!(status, 400);
    assert_eq!(
        v["error"]["message"],
        format!(
            "the body is not the JSON expected: unknown field `{}…` (500000 bytes), expected `positions` or `version` at line 1 column 500003",
            "a".repeat(80)
        )
    );
    // A 500 KB string where a number belongs.
    let body = serde_json::to_vec(&json!({ "from_offset": long })).unwrap();
    let (status, v) = api("POST", "/v1/processors/probe/replay", &body);
    assert_eq!(
        (status, v["error"]["message"].as_str().unwrap()),
        (
            400,
            format!(
                "the body is not the JSON expected: invalid type: string {shown}, expected u64 at line 1 column 500017"
            )
            .as_str()
        )
    );
    // A long processor name in the path.
    let name = "p".repeat(300);
    let (status, v) = api("GET", &format!("/v1/processors/{name}"), b"");
    assert_eq!(
        (status, v["error"]["message"].as_str().unwrap()),
        (
            404,
            format!(
                "no processor \"{}…\" (300 bytes) runs here (running: probe)",
                "p".repeat(80)
            )
            .as_str()
        )
    );
    // A partition that is not a number, in the path.
    let (status, v) = api(
        "GET",
        &format!("/v1/processors/probe/dead-letters/{}/1", "9".repeat(300)),
        b"",
    );
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("bad-request"))
    );
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.contains(&format!("`{}…` (300 bytes)", "9".repeat(80))),
        "{m}"
    );
    assert!(m.len() < 200, "{m}");

    // The console: the same clipping in its notices.
    let form = format!("version={long}");
    let r = session.post(
        &host,
        "/processors/probe/activate",
        "application/x-www-form-urlencoded",
        form.as_bytes(),
        &[],
    );
    assert_eq!(
        (r.status, r.text()),
        (
            400,
            format!(
                "Refused bad-version version {shown}: a prefix needs 8 to 64 hex digits, this has 500000"
            )
        )
    );
    let form = format!("canary_events={long}&canary_percent=5&version=abcdef12");
    let r = session.post(
        &host,
        "/processors/probe/activate",
        "application/x-www-form-urlencoded",
        form.as_bytes(),
        &[],
    );
    assert_eq!(
        (r.status, r.text()),
        (
            400,
            format!("Refused bad-request canary events {shown} is not a whole number")
        )
    );
    assert_eq!(host.processor("probe")["swaps"], 0);
}

#[test]
fn a_change_without_origin_from_another_sites_page_is_refused_by_referer_or_sec_fetch_site() {
    let env = Env::new();
    let host = Host::start(&env, &probe_config(&env, ""), |_| {});
    let session = log_in(&host);
    let pause = |extra: &[(&str, &str)]| {
        let r = session.post(
            &host,
            "/processors/probe/pause",
            "application/x-www-form-urlencoded",
            b"",
            extra,
        );
        (r.status, r.text())
    };
    let refused = |why: &str| {
        (
            403,
            format!(
                "Refused forbidden this change came from another site's page ({why}): refused; nothing was changed"
            ),
        )
    };
    // The session cookie and the right CSRF token, but sent from another
    // site's page: no Origin, a cross-site Referer.
    assert_eq!(
        pause(&[("Referer", "http://evil.example/attack.html")]),
        refused("its Referer is not this host's")
    );
    let other_port = format!(
        "http://127.0.0.1:{}/",
        host.url.rsplit(':').next().unwrap().parse::<u16>().unwrap() ^ 1
    );
    assert_eq!(
        pause(&[("Referer", &other_port)]),
        refused("its Referer is not this host's")
    );
    assert_eq!(
        pause(&[("Sec-Fetch-Site", "cross-site")]),
        refused("its Sec-Fetch-Site is cross-site")
    );
    assert_eq!(
        pause(&[
            ("Sec-Fetch-Site", "same-site"),
            ("Referer", &format!("{}/processors/probe", host.url))
        ]),
        refused("its Sec-Fetch-Site is same-site, another host or port")
    );
    assert_eq!(
        pause(&[("Origin", "http://evil.example")]),
        refused("its Origin is not this host's")
    );
    assert_eq!(host.processor("probe")["paused"], json!(false));

    // This host's own page: its Referer, or Sec-Fetch-Site same-origin.
    let ok = (
        200,
        "probe pauses at the next batch boundary; its lag grows until you resume it.".to_owned(),
    );
    assert_eq!(
        pause(&[("Referer", &format!("{}/processors/probe", host.url))]),
        ok
    );
    assert_eq!(host.processor("probe")["paused"], json!(true));
    assert_eq!(pause(&[("Sec-Fetch-Site", "same-origin")]), ok);
    assert_eq!(pause(&[("Origin", &host.url)]), ok);

    // A login form posted from another site's page makes no session.
    let r = send(
        &host.url,
        "POST",
        "/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Referer", "http://evil.example/"),
        ],
        format!("token={TOKEN}&next=%2F").as_bytes(),
        false,
    );
    assert_eq!(r.status, 403);
    assert_eq!(r.header("set-cookie"), None);
    assert!(
        r.text().contains(
            "this login came from another site's page (its Referer is not this host's): refused"
        ),
        "{}",
        r.text()
    );
}

#[test]
fn a_misspelt_field_in_activate_or_replay_is_refused_not_ignored() {
    let env = Env::new();
    let host = Host::start(&env, &probe_config(&env, ""), |_| {});
    let auth = format!("Bearer {TOKEN}");
    let api = |path: &str, body: Value| {
        let r = send(
            &host.url,
            "POST",
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            &serde_json::to_vec(&body).unwrap(),
            false,
        );
        (r.status, r.json()["error"]["message"].clone())
    };
    // A canary misspelt would otherwise be a full activation, and a replay
    // without its reprocess a replay under the old keys.
    assert_eq!(
        api(
            "/v1/processors/probe/activate",
            json!({"version": "d4ea19f5", "canry": {"events": 1000}})
        ),
        (
            400,
            json!(
                "the body is not the JSON expected: unknown field `canry`, expected `version` or `canary` at line 1 column 8"
            )
        )
    );
    assert_eq!(
        api(
            "/v1/processors/probe/replay",
            json!({"from_offset": 0, "reprocss": true})
        ),
        (
            400,
            json!(
                "the body is not the JSON expected: unknown field `reprocss`, expected one of `from_offset`, `from_time`, `reprocess` at line 1 column 27"
            )
        )
    );
    assert_eq!(versions(&host), 1);
}
