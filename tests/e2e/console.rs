//! The web console in a real browser: Debian's chromium, headless, driven
//! through chromedriver (fantoccini), against a host started in-process on
//! 127.0.0.1:0 with the demo's processors (plus `probe`, whose dead letters
//! a fixed version can replay). What each page shows is checked against
//! the JSON API and `/metrics`. A screenshot of each page goes to
//! `target/console-screenshots/`.
//!
//! `make test` installs chromium and chromium-driver and requires them
//! (TIDEWATER_REQUIRE_BROWSER=1); a plain `cargo test` without them skips
//! this test and says so.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use sha2::Digest;

use crate::common::*;
use crate::deploy::{Host, TOKEN, numbered};
use crate::wasm::rebuilt;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long the test waits for anything the page or the host should do.
const PATIENCE: Duration = Duration::from_secs(60);

fn short(sha: &str) -> &str {
    &sha[..12]
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// chromedriver on a free port of 127.0.0.1, killed on drop.
struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Driver {
    /// `None` (the test is skipped) when chromium or chromedriver is missing
    /// and TIDEWATER_REQUIRE_BROWSER is not set.
    fn start() -> Option<Driver> {
        if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
            assert!(
                std::env::var("TIDEWATER_REQUIRE_BROWSER").is_err(),
                "TIDEWATER_REQUIRE_BROWSER is set but {CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)"
            );
            eprintln!("skipped: no chromium and chromedriver (`make test` installs them)");
            return None;
        }
        // A free port: bound by the OS, released, handed to chromedriver.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < PATIENCE,
                "chromedriver did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _profile: tempfile::tempdir().unwrap(),
        })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless chromium session, driven synchronously.
struct Browser {
    rt: tokio::runtime::Runtime,
    c: Client,
    base: String,
    shots: PathBuf,
}

impl Browser {
    fn open(driver: &Driver, base: &str) -> Browser {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let profile = driver._profile.path().display().to_string();
        let caps = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-quic", "--no-first-run", "--window-size=1400,1000",
                    format!("--user-data-dir={profile}"),
                ]
            }
        });
        let caps = caps.as_object().unwrap().clone();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let c = rt
            .block_on(
                ClientBuilder::new(connector)
                    .capabilities(caps)
                    .connect(&driver.url),
            )
            .expect("a chromium session");
        let shots = root().join("target/console-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            rt,
            c,
            base: base.to_owned(),
            shots,
        }
    }

    fn goto(&self, path: &str) {
        self.rt
            .block_on(self.c.goto(&format!("{}{path}", self.base)))
            .unwrap_or_else(|e| panic!("opening {path}: {e}"));
    }

    fn path(&self) -> String {
        let u = self.rt.block_on(self.c.current_url()).unwrap();
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        }
    }

    fn find(&self, css: &str) -> Element {
        self.rt
            .block_on(self.c.find(Locator::Css(css)))
            .unwrap_or_else(|e| panic!("no {css} on {}: {e}", self.path()))
    }

    fn all(&self, css: &str) -> Vec<Element> {
        self.rt
            .block_on(self.c.find_all(Locator::Css(css)))
            .unwrap()
    }

    /// The rendered text of the first element matching `css`, read in one
    /// step (the live table is replaced every second).
    fn text(&self, css: &str) -> String {
        self.try_text(css)
            .unwrap_or_else(|| panic!("no {css} on {}", self.path()))
    }

    fn try_text(&self, css: &str) -> Option<String> {
        let script =
            "const e = document.querySelector(arguments[0]); return e ? e.innerText.trim() : null;";
        let v = self
            .rt
            .block_on(self.c.execute(script, vec![json!(css)]))
            .unwrap_or_else(|e| panic!("reading {css}: {e}"));
        v.as_str().map(str::to_owned)
    }

    /// Clicks `css`; finds it again if the page replaced it meanwhile
    /// (the processor's panel refreshes every 2 s).
    fn click(&self, css: &str) {
        let start = Instant::now();
        loop {
            let e = self.find(css);
            match self.rt.block_on(e.click()) {
                Ok(()) => return,
                Err(err)
                    if err.to_string().contains("stale element") && start.elapsed() < PATIENCE => {}
                Err(err) => panic!("clicking {css}: {err}"),
            }
        }
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.rt.block_on(e.send_keys(text)).unwrap();
    }

    fn select(&self, css: &str, value: &str) {
        let e = self.find(css);
        self.rt
            .block_on(e.select_by_value(value))
            .unwrap_or_else(|e| panic!("choosing {value} in {css}: {e}"));
    }

    fn js(&self, script: &str) -> Value {
        self.rt
            .block_on(self.c.execute(script, vec![]))
            .unwrap_or_else(|e| panic!("running {script}: {e}"))
    }

    /// Waits until the text of `css` satisfies `ok`; returns it.
    fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            if let Some(t) = self.try_text(css)
                && ok(&t)
            {
                return t;
            }
            if start.elapsed() > PATIENCE {
                let t = self.try_text(css);
                self.shot("failure");
                panic!(
                    "waited {PATIENCE:?} on {} for {what}; {css} says {t:?}",
                    self.path()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The notice of the last action in `#result`, once it is there.
    fn result(&self) -> String {
        self.wait_text("#result .notice", "the action's answer", |t| !t.is_empty())
    }

    /// Empties `#result`, so that the next answer is the next action's.
    fn clear_result(&self) {
        self.js("document.getElementById('result').innerHTML = ''; return null");
    }

    /// Clicks `css` and returns the action's answer.
    fn act(&self, css: &str) -> String {
        self.clear_result();
        self.click(css);
        self.result()
    }

    fn shot(&self, name: &str) {
        let png = self.rt.block_on(self.c.screenshot()).unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    fn cookie_names(&self) -> Vec<String> {
        self.rt
            .block_on(self.c.get_all_cookies())
            .unwrap()
            .iter()
            .map(|c| c.name().to_owned())
            .collect()
    }

    /// Opens a new tab and switches to it; returns the tab it left.
    fn new_tab(&self) -> fantoccini::wd::WindowHandle {
        let here = self.rt.block_on(self.c.window()).unwrap();
        let tab = self.rt.block_on(self.c.new_window(true)).unwrap();
        self.rt
            .block_on(self.c.switch_to_window(tab.handle))
            .unwrap();
        here
    }

    fn switch(&self, to: &fantoccini::wd::WindowHandle) {
        self.rt
            .block_on(self.c.switch_to_window(to.clone()))
            .unwrap();
    }
}

/// A number as the console writes it, e.g. `1,343`.
fn number(text: &str) -> u64 {
    text.trim()
        .replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("{text:?} is not a number"))
}

/// The value of `metric{labels}` in Prometheus text.
fn metric(text: &str, name_and_labels: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name_and_labels} in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// `make compare`'s report as the languages page reads it.
const COMPARE: &str = r#"[
  {"language": "rust", "wasm_bytes": 231559, "compile_ms": 258.0, "cached_load_ms": 0.3, "instantiate_ms": 0.019, "events": 73284, "events_per_s": 46951.0, "p99_ms": 18.17, "dead_lettered": 0, "identical": true, "differing": 0},
  {"language": "python", "wasm_bytes": 18411228, "compile_ms": 7657.0, "cached_load_ms": 39.88, "instantiate_ms": 0.787, "events": 73284, "events_per_s": 20629.0, "p99_ms": 25.36, "dead_lettered": 0, "identical": false, "differing": 2}
]"#;

/// The host of the test: the demo's enrich and threshold on two of the
/// real data sets, and probe failing every 4th event of `probe-in`.
fn start_host(env: &Env) -> Host {
    env.produce_csv("sensor-readings", &SMALL_DATA, None);
    env.produce("probe-in", numbered(10));
    let report = env.dir.path().join("compare.json");
    std::fs::write(&report, COMPARE).unwrap();
    let config = env.config(&format!(
        "{}\n[[processor]]\nname = \"probe\"\ncomponent = \"{}\"\ninputs = [\"probe-in\"]\noutput = \"probe-out\"\n[processor.config]\nfail-every = \"4\"\n",
        demo_config_text(),
        plugin("probe").display()
    ));
    let host = Host::start(env, &config, |a| a.console.compare_report = Some(report));
    let readings: u64 = host.get("/v1/topics")["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "sensor-readings")
        .map(|t| t["records"].as_u64().unwrap())
        .unwrap();
    let enrich = host.wait_events("enrich", readings);
    let outputs = enrich["counters"]["outputs"].as_u64().unwrap();
    host.wait_events("threshold", outputs);
    host.wait_events("probe", 10);
    host
}

#[test]
fn the_console_deploys_rolls_back_and_replays_in_a_real_browser() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let env = Env::new();
    let host = start_host(&env);
    let b = Browser::open(&driver, &host.url);
    a_wrong_token_shows_an_error_and_changes_nothing(&b, &host);
    log_in(&b);
    changes_need_the_pages_csrf_token(&b, &host);
    the_overview_shows_what_the_api_and_metrics_say(&b, &host);
    deploy_activate_and_roll_back(&b, &host);
    pause_and_resume(&b, &host);
    open_a_dead_letter_and_replay_it_through_a_fix(&b, &host);
    a_shadow_shows_its_differences_side_by_side(&b, &host);
    a_canary_that_fails_rolls_back_by_itself(&b, &host);
    the_topic_page_tells_which_version_processed_each_record(&b, &host);
    the_languages_page_shows_the_report(&b, &host);
    b.click("header .who button");
    b.wait_text("h1", "the login page after logging out", |t| t == "Log in");
    assert!(!b.cookie_names().contains(&"tidewater_session".to_owned()));
}

fn a_wrong_token_shows_an_error_and_changes_nothing(b: &Browser, host: &Host) {
    let before = host.get("/v1/processors/enrich/versions");
    b.goto("/");
    assert_eq!(
        b.path(),
        "/login?next=%2F",
        "a read-only page asks to log in first"
    );
    b.shot("login");
    b.type_into("#token", "not-the-token");
    b.click("#login-button");
    let error = b.wait_text("#login-error", "the login error", |t| !t.is_empty());
    assert!(
        error.contains("that is not this host's admin token; nothing was changed"),
        "{error}"
    );
    assert!(
        !b.cookie_names().contains(&"tidewater_session".to_owned()),
        "a wrong token makes no session"
    );
    b.shot("login-refused");
    b.goto("/processors/enrich");
    assert!(
        b.path().starts_with("/login"),
        "still not logged in: {}",
        b.path()
    );
    assert_eq!(host.get("/v1/processors/enrich/versions"), before);
}

fn log_in(b: &Browser) {
    b.goto("/login?next=%2F");
    b.type_into("#token", TOKEN);
    b.click("#login-button");
    b.wait_text("h1", "the overview", |t| t == "Overview");
    assert_eq!(b.path(), "/");
    assert!(b.cookie_names().contains(&"tidewater_session".to_owned()));
}

fn changes_need_the_pages_csrf_token(b: &Browser, host: &Host) {
    // The session cookie alone, without the page's CSRF token: refused.
    let status =
        b.js("return fetch('/processors/enrich/pause', {method: 'POST'}).then(r => r.status)");
    assert_eq!(status, json!(403));
    let forged = b.js(
        "return fetch('/processors/enrich/pause', {method: 'POST', headers: {'X-CSRF-Token': 'guess'}}).then(r => r.text())",
    );
    assert!(
        forged
            .as_str()
            .unwrap()
            .contains("CSRF token is missing or stale"),
        "{forged}"
    );
    assert_eq!(host.processor("enrich")["paused"], json!(false));
}

fn the_overview_shows_what_the_api_and_metrics_say(b: &Browser, host: &Host) {
    b.goto("/");
    let api = host.get("/v1/processors");
    let metrics = b.js("return fetch('/metrics').then(r => r.text())");
    let metrics = metrics.as_str().unwrap();
    for p in api["processors"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let row = format!("#live tr[data-processor=\"{name}\"]");
        let cell = |field: &str| b.text(&format!("{row} [data-field={field}]"));
        assert_eq!(
            cell("active_version"),
            short(p["active_version"].as_str().unwrap())
        );
        assert_eq!(cell("state"), "running");
        for (field, counter) in [
            ("events_in", "events_in"),
            ("duplicates", "duplicates"),
            ("conflicts", "conflicts"),
            ("dead_lettered", "dead_lettered"),
            ("errors", "errors"),
        ] {
            let shown = number(&cell(field));
            assert_eq!(
                shown,
                p["counters"][counter].as_u64().unwrap(),
                "{name} {field}"
            );
            let m = metric(
                metrics,
                &format!("tidewater_{counter}_total{{processor=\"{name}\"}}"),
            );
            assert_eq!(shown, m, "{name} {field} against /metrics");
        }
        assert_eq!(number(&cell("lag")), 0);
    }
    assert_eq!(
        b.text("#live tr[data-processor=\"probe\"] [data-field=dead_lettered]"),
        "3"
    );
    assert_eq!(
        b.text("#live tr[data-processor=\"probe\"] [data-field=error_codes]"),
        "invalid 3"
    );
    for t in host.get("/v1/topics")["topics"].as_array().unwrap() {
        let ends: Vec<String> = t["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["end"].to_string())
            .collect();
        let row = format!(
            "#topics-table tr[data-topic=\"{}\"]",
            t["name"].as_str().unwrap()
        );
        assert_eq!(b.text(&format!("{row} [data-field=ends]")), ends.join(", "));
    }
    b.shot("overview");
}

/// Chooses `file` in the upload form, with `then`, and an optional config.
fn upload(b: &Browser, file: &Path, then: &str, config: Option<&str>) -> String {
    b.clear_result();
    b.type_into("#file", &file.display().to_string());
    b.click(&format!("input[name=then][value={then}]"));
    if let Some(c) = config {
        b.js("document.querySelector('#upload-form details').open = true; return null");
        b.type_into("#config", c);
    }
    b.act("#upload-button")
}

fn deploy_activate_and_roll_back(b: &Browser, host: &Host) {
    let v1 = host.processor("enrich")["active_version"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    // The overview stays open in this tab: it must show each change live.
    let overview = b.new_tab();
    b.goto("/processors/enrich");
    let junk = dir.path().join("notes.wasm");
    std::fs::write(&junk, "this is not a component").unwrap();
    let refused = upload(b, &junk, "activate", None);
    assert!(refused.contains("Refused not-webassembly"), "{refused}");
    assert_eq!(
        host.get("/v1/processors/enrich/versions")["versions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    b.shot("upload-refused");
    // A 0-byte file is refused as empty, by name (not "choose a file first").
    let empty = dir.path().join("empty.wasm");
    std::fs::write(&empty, b"").unwrap();
    assert_eq!(
        upload(b, &empty, "activate", None),
        "Refused empty-component empty.wasm is empty (0 bytes): choose the component's built .wasm file; nothing was uploaded"
    );

    let v2_bytes = rebuilt(&std::fs::read(plugin("enrich")).unwrap(), "console-v2");
    let v2 = sha256(&v2_bytes);
    let file = dir.path().join("enrich-v2.wasm");
    std::fs::write(&file, &v2_bytes).unwrap();
    let kept = upload(b, &file, "keep", None);
    assert!(
        kept.contains(&format!(
            "Uploaded enrich-v2.wasm as version {}",
            short(&v2)
        )),
        "{kept}"
    );
    assert!(kept.contains("It is kept, not running"), "{kept}");
    assert_eq!(host.processor("enrich")["active_version"], json!(v1));

    let row = format!("#versions-table tr[data-version=\"{v2}\"]");
    b.wait_text(&row, "the new version in the table", |t| {
        t.contains(short(&v2))
    });
    let activated = b.act(&format!("{row} button.activate"));
    assert!(
        activated.contains(&format!("Version {} becomes active", short(&v2))),
        "{activated}"
    );
    host.wait_for("enrich", "v2 active", |p| p["active_version"] == json!(v2));

    b.switch(&overview);
    let cell = "#live tr[data-processor=\"enrich\"] [data-field=active_version]";
    b.wait_text(cell, "the overview to show v2 live", |t| t == short(&v2));
    let metrics = b.js("return fetch('/metrics').then(r => r.text())");
    let line = format!("tidewater_active_version{{processor=\"enrich\",version=\"{v2}\"}}");
    assert_eq!(metric(metrics.as_str().unwrap(), &line), 1);
    b.shot("overview-after-deploy");

    let tabs = b.rt.block_on(b.c.windows()).unwrap();
    b.switch(tabs.iter().find(|t| **t != overview).unwrap());
    b.clear_result();
    b.click("#rollback-button");
    // The page asks first.
    b.rt.block_on(b.c.accept_alert())
        .expect("the rollback asks to confirm");
    let back = b.result();
    assert!(
        back.contains(&format!("Rolling back to version {}", short(&v1))),
        "{back}"
    );
    host.wait_for("enrich", "v1 active again", |p| {
        p["active_version"] == json!(v1)
    });
    b.wait_text(
        "#history-table tbody tr:first-child",
        "the rollback in the history",
        |t| t.contains(short(&v1)) && t.contains("rolled back to it"),
    );
    let history = host.get("/v1/processors/enrich/versions")["history"].clone();
    let reasons: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["start", "activate", "rollback"]);
    b.shot("processor");
    b.switch(&overview);
    b.wait_text(cell, "the overview to show v1 again", |t| t == short(&v1));
}

fn open_a_dead_letter_and_replay_it_through_a_fix(b: &Browser, host: &Host) {
    let api = host.get("/v1/processors/probe/dead-letters");
    assert_eq!(api["total"], json!(3));
    assert_eq!(api["kinds"], json!({"invalid": 3}));
    b.goto("/processors/probe/dead-letters");
    let rows = b.all("#dead-letters-table tbody tr");
    assert_eq!(rows.len(), 3);
    for item in api["items"].as_array().unwrap() {
        let row = format!(
            "tr[data-position=\"{}:{}\"]",
            item["partition"], item["offset"]
        );
        assert_eq!(
            b.text(&format!("{row} .why")),
            item["message"].as_str().unwrap()
        );
        assert_eq!(
            b.text(&format!("{row} [data-field=replay]")),
            "not replayed yet"
        );
    }
    assert_eq!(b.text("#kind option[value=invalid]"), "invalid (3)");
    b.shot("dead-letters");

    // The fix: the same probe with no fail-every in its config.
    let dir = tempfile::tempdir().unwrap();
    let fix_bytes = rebuilt(&std::fs::read(plugin("probe")).unwrap(), "console-fix");
    let fix = sha256(&fix_bytes);
    let file = dir.path().join("probe-fixed.wasm");
    std::fs::write(&file, &fix_bytes).unwrap();
    b.goto("/processors/probe");
    let kept = upload(b, &file, "keep", Some("{}"));
    assert!(
        kept.contains(&format!("as version {}", short(&fix))),
        "{kept}"
    );

    // The dead letter of the event at probe-in offset 4.
    let item = api["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["original"]["offset"] == json!(4))
        .unwrap()
        .clone();
    let (p, o) = (
        item["partition"].as_u64().unwrap(),
        item["offset"].as_u64().unwrap(),
    );
    b.goto(&format!("/processors/probe/dead-letters/{p}/{o}"));
    assert_eq!(b.text("[data-field=kind]"), "invalid");
    assert_eq!(b.text("[data-field=message]"), "probe fail-every 4");
    assert_eq!(
        b.text("pre[data-field=value]"),
        item["original"]["value"].as_str().unwrap()
    );
    assert_eq!(b.text("pre[data-field=value]"), "e4");
    b.shot("dead-letter");
    b.select("#through", &fix);
    let replayed = b.act("#replay-this");
    assert!(
        replayed.contains(&format!(
            "1 of 1 dead letters replayed through version {}: 1 outputs published",
            short(&fix)
        )),
        "{replayed}"
    );
    let one = host.get(&format!("/v1/processors/probe/dead-letters/{p}/{o}"));
    assert_eq!(one["replayed"]["version"], json!(fix));
    assert_eq!(one["replayed"]["failed"], Value::Null);
    b.goto(&format!("/processors/probe/dead-letters/{p}/{o}"));
    assert!(
        b.text("[data-field=replay]")
            .starts_with(&format!("replayed by version {}", short(&fix)))
    );
    let out = host.get("/v1/topics/probe-out/records?max=50");
    let values: Vec<&str> = out["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["record"]["value"].as_str().unwrap())
        .collect();
    assert!(
        values.contains(&"e4"),
        "the replayed event's output is published: {values:?}"
    );
    assert_eq!(values.len(), 8, "7 processed, 1 replayed: {values:?}");

    // The two others, through the active version (which fails on them again).
    b.goto("/processors/probe/dead-letters");
    let others: Vec<String> = api["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["offset"] != item["offset"])
        .map(|i| format!("{}:{}", i["partition"], i["offset"]))
        .collect();
    for pos in &others {
        b.click(&format!("input[name=pos][value=\"{pos}\"]"));
    }
    a_selection_with_a_wrong_position_replays_nothing(b, host, &others);
    assert_eq!(
        b.text("#through option:checked"),
        format!(
            "the active version, {} (language not named)",
            short(api["items"][0]["version"].as_str().unwrap())
        )
    );
    b.select("#through", "active");
    let again = b.act("#replay-selected");
    assert!(
        again.contains("0 of 2 dead letters replayed") && again.contains("2 failed again"),
        "{again}"
    );
    for pos in &others {
        b.wait_text(
            &format!("tr[data-position=\"{pos}\"] [data-field=replay]"),
            "failed again",
            |t| t.starts_with("failed again with version"),
        );
        let (p, o) = pos.split_once(':').unwrap();
        let api = host.get(&format!("/v1/processors/probe/dead-letters/{p}/{o}"));
        assert_eq!(
            api["replayed"]["failed"],
            json!("invalid: probe fail-every 4")
        );
    }
    b.shot("dead-letters-after-replay");
}

/// The two dead letters of `others` (selected on the page) and a position
/// that holds none: the replay is refused whole, in words.
fn a_selection_with_a_wrong_position_replays_nothing(b: &Browser, host: &Host, others: &[String]) {
    b.js("const i = document.createElement('input'); i.type = 'hidden'; i.name = 'pos'; i.value = '0:999'; i.id = 'no-such-dead-letter'; document.getElementById('replay-form').appendChild(i); return null");
    let refused = b.act("#replay-selected");
    assert!(
        refused.contains("there is no dead letter at probe.dlq/0@999; nothing was replayed"),
        "{refused}"
    );
    for pos in others {
        let (p, o) = pos.split_once(':').unwrap();
        let api = host.get(&format!("/v1/processors/probe/dead-letters/{p}/{o}"));
        assert_eq!(api["replayed"], Value::Null, "{pos} was not replayed");
        assert_eq!(
            b.text(&format!("tr[data-position=\"{pos}\"] [data-field=replay]")),
            "not replayed yet"
        );
    }
    b.shot("dead-letters-replay-refused");
    b.js("document.getElementById('no-such-dead-letter').remove(); return null");
}

/// Pausing from the processor's page stops it at a batch boundary; resuming
/// starts it again. The panel, the API and `/metrics`-backed counters agree.
fn pause_and_resume(b: &Browser, host: &Host) {
    b.goto("/processors/threshold");
    let paused = b.act("#pause-button");
    assert!(
        paused.contains("threshold pauses at the next batch boundary"),
        "{paused}"
    );
    host.wait_for("threshold", "threshold paused", |p| {
        p["state"] == json!("paused")
    });
    b.wait_text("[data-field=state]", "the panel to say paused", |t| {
        t == "paused"
    });
    let resumed = b.act("#resume-button");
    assert!(
        resumed.contains("threshold resumes from where it paused"),
        "{resumed}"
    );
    host.wait_for("threshold", "threshold running", |p| {
        p["state"] == json!("running")
    });
    b.wait_text("[data-field=state]", "the panel to say running", |t| {
        t == "running"
    });
}

/// Feeds probe its 10 inputs again, in a new idempotency epoch (through
/// the JSON API: the console has no button for input replays yet).
fn probe_reads_its_input_again(host: &Host) {
    let before = host.processor("probe")["counters"]["events_in"]
        .as_u64()
        .unwrap();
    host.post(
        "/v1/processors/probe/replay",
        json!({"from_offset": 0, "reprocess": true}),
    );
    host.wait_events("probe", before + 10);
}

/// Uploads a build of probe (different bytes, the same code) with `config`.
fn upload_probe(b: &Browser, tag: &str, then: &str, config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let bytes = rebuilt(&std::fs::read(plugin("probe")).unwrap(), tag);
    let file = dir.path().join(format!("probe-{tag}.wasm"));
    std::fs::write(&file, &bytes).unwrap();
    let answer = upload(b, &file, then, Some(config));
    let sha = sha256(&bytes);
    assert!(
        answer.contains(&format!("as version {}", short(&sha))),
        "{answer}"
    );
    sha
}

fn a_shadow_shows_its_differences_side_by_side(b: &Browser, host: &Host) {
    // The candidate fails every 2nd event ("probe fail-every 2"), the
    // active version every 4th ("... 4"): of the 10 inputs, offsets 0, 2,
    // 4, 6 and 8 differ (an error must be the same error to be identical).
    b.goto("/processors/probe");
    let candidate = upload_probe(b, "shadow", "shadow", r#"{"fail-every": "2"}"#);
    host.wait_for("probe", "the shadow to start", |p| {
        p["shadow"]["version"] == json!(candidate)
    });
    probe_reads_its_input_again(host);
    let report = host.wait_for("probe", "10 events compared", |p| {
        p["shadow"]["compared"] == json!(10)
    })["shadow"]
        .clone();
    assert_eq!(
        (report["identical"].clone(), report["different"].clone()),
        (json!(5), json!(5))
    );
    b.wait_text(
        "#shadow [data-field=shadow_compared]",
        "the panel to show the shadow",
        |t| t == "10",
    );
    assert_eq!(b.text("#shadow [data-field=shadow_identical]"), "5");
    assert_eq!(b.text("#shadow [data-field=shadow_different]"), "5");
    let rows = b.all("#shadow table.sidebyside tbody tr");
    assert_eq!(rows.len(), 5);
    for (i, sample) in report["samples"].as_array().unwrap().iter().enumerate() {
        let row = format!("#shadow table.sidebyside tbody tr:nth-child({})", i + 1);
        assert_eq!(
            b.text(&format!("{row} td:nth-child(1)")),
            format!("probe-in/0@{}", sample["offset"])
        );
        assert_eq!(
            b.text(&format!("{row} td:nth-child(2)")),
            sample["active"].as_str().unwrap()
        );
        assert_eq!(
            b.text(&format!("{row} td:nth-child(3)")),
            "invalid: probe fail-every 2"
        );
        let offset = sample["offset"].as_u64().unwrap();
        let active = sample["active"].as_str().unwrap();
        if offset % 4 == 0 {
            assert_eq!(active, "invalid: probe fail-every 4");
        } else {
            assert!(active.starts_with("ok [{topic: None"), "{active}");
        }
    }
    let metrics = b.js("return fetch('/metrics').then(r => r.text())");
    assert_eq!(
        metric(
            metrics.as_str().unwrap(),
            "tidewater_shadow_different_total{processor=\"probe\"}"
        ),
        5
    );
    b.shot("shadow");
    let stopped = b.act("#stop-shadow-button");
    assert!(stopped.contains("The shadow stops"), "{stopped}");
    host.wait_for("probe", "the shadow to stop", |p| p["shadow"].is_null());
}

fn a_canary_that_fails_rolls_back_by_itself(b: &Browser, host: &Host) {
    let before = host.processor("probe")["active_version"]
        .as_str()
        .unwrap()
        .to_owned();
    b.goto("/processors/probe");
    b.js("document.querySelector('#upload-form details').open = true; return null");
    b.type_into("#upload-form input[name=canary_percent]", "10");
    b.type_into("#upload-form input[name=canary_events]", "5");
    // Every event fails on this build: more than 10% of 5.
    let canary = upload_probe(b, "canary", "activate", r#"{"fail-every": "1"}"#);
    host.wait_for("probe", "the canary to start", |p| {
        p["canary"]["version"] == json!(canary)
    });
    probe_reads_its_input_again(host);
    let p = host.wait_for("probe", "the canary rollback", |p| {
        !p["last_rollback"].is_null()
    });
    assert_eq!(p["active_version"], json!(before));
    let reason = p["last_rollback"].as_str().unwrap();
    assert!(
        reason.starts_with(
            "canary rollback: 10 of its first 10 events failed (100.0%, the limit is 10.0%)"
        ),
        "{reason}"
    );
    let shown = b.wait_text("#last-rollback", "the rollback on the page", |t| {
        t.contains("canary rollback")
    });
    assert_eq!(shown, format!("Rolled back by its canary: {reason}"));
    b.wait_text(
        &format!("#versions-table tr[data-version=\"{canary}\"]"),
        "the reason in the versions",
        |t| t.contains(&format!("rolled back by its canary: {reason}")),
    );
    assert_eq!(b.text("[data-field=active_version]"), short(&before));
    b.shot("canary-rolled-back");
}

fn the_topic_page_tells_which_version_processed_each_record(b: &Browser, host: &Host) {
    let api = host.get("/v1/topics/sensor-readings/records?max=5");
    b.goto("/topics/sensor-readings?max=5");
    let records = api["records"].as_array().unwrap();
    assert_eq!(records.len(), 5);
    assert_eq!(b.all("li.record").len(), 5);
    let enrich_v1 = host.processor("enrich")["active_version"]
        .as_str()
        .unwrap()
        .to_owned();
    for r in records {
        let (p, o) = (
            r["record"]["partition"].as_u64().unwrap(),
            r["record"]["offset"].as_u64().unwrap(),
        );
        let summary = r["processed_by"][0]["summary"].as_str().unwrap();
        assert!(
            summary.starts_with(&format!("processed by version {}", short(&enrich_v1)))
                || summary.starts_with("a duplicate: its key was first processed by version"),
            "{summary}"
        );
        let shown = b.text(&format!(
            "li.record[data-position=\"{p}:{o}\"] .processed[data-processor=enrich] [data-field=processed]"
        ));
        assert_eq!(shown, summary);
        // The same answer from the CLI.
        let out = Command::new(env!("CARGO_BIN_EXE_tidewater"))
            .args(["processed-by", "enrich", "--topic", "sensor-readings"])
            .args(["--partition", &p.to_string(), "--offset", &o.to_string()])
            .args(["--admin", &host.url, "--token", TOKEN])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("sensor-readings/{p}@{o}: {summary}")
        );
    }
    b.shot("topic");
}

fn the_languages_page_shows_the_report(b: &Browser, host: &Host) {
    let api = host.get("/v1/compare");
    b.goto("/languages");
    for row in api["rows"].as_array().unwrap() {
        let tr = format!(
            "#languages-table tr[data-language=\"{}\"]",
            row["language"].as_str().unwrap()
        );
        assert_eq!(
            number(&b.text(&format!("{tr} [data-field=wasm_bytes]"))),
            row["wasm_bytes"].as_u64().unwrap()
        );
        assert_eq!(
            number(&b.text(&format!("{tr} [data-field=events_per_s]"))),
            row["events_per_s"].as_f64().unwrap() as u64
        );
    }
    assert_eq!(
        b.text("tr[data-language=\"rust\"] [data-field=identical]"),
        "yes"
    );
    assert_eq!(
        b.text("tr[data-language=\"python\"] [data-field=identical]"),
        "no: 2 records differ"
    );
    assert_eq!(b.all("svg.bars").len(), 5);
    b.shot("languages");
}
