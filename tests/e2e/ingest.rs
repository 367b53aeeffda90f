//! Live ingest: real HTTP clients and a real Mosquitto broker against the
//! `tidewater run` binary; the log read back from the real redb file.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tidewater::admin::client::Client;
use tidewater::streams::LogRecord;
use tidewater::streams::ingest::client::IngestClient;

use crate::common::*;

/// `tidewater run` as a child process, with its ingest URL (and admin
/// client when it serves one); its stderr drained into `log`.
struct Child_ {
    child: Option<Child>,
    ingest: Option<String>,
    admin: Option<Client>,
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Child_ {
    /// Starts `run` on `config` with `args` and waits until it writes its
    /// ingest URL (when `wait_ingest`) and admin URL (when asked for).
    fn start(env: &Env, config: &Path, args: &[&str], wait_ingest: bool) -> Child_ {
        let _ = std::fs::remove_file(env.data_dir().join("ingest.url"));
        let _ = std::fs::remove_file(env.data_dir().join("admin.url"));
        let mut child = env
            .cmd()
            .env("TIDEWATER_LOG", "tidewater::streams::ingest=info,warn")
            .args(["run", "--format", "json", "--config"])
            .arg(config)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let admin_wanted = args.contains(&"--admin");
        let deadline = Instant::now() + Duration::from_secs(120);
        let ready = |f: &str| env.data_dir().join(f).exists();
        while (wait_ingest && !ready("ingest.url")) || (admin_wanted && !ready("admin.url")) {
            if let Ok(Some(s)) = child.try_wait() {
                panic!("run exited ({s}): {:?}", log.lock().unwrap());
            }
            assert!(
                Instant::now() < deadline,
                "run did not start: {:?}",
                log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let ingest = wait_ingest.then(|| {
            std::fs::read_to_string(env.data_dir().join("ingest.url"))
                .unwrap()
                .trim()
                .to_owned()
        });
        let admin =
            admin_wanted.then(|| Client::discover(&env.data_dir(), None, None).expect("admin URL"));
        Child_ {
            child: Some(child),
            ingest,
            admin,
            log,
        }
    }

    /// Waits until a line of the host's log contains `text`.
    fn wait_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.log.lock().unwrap().iter().any(|l| l.contains(text)) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} in {:?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// GET on the admin API.
    fn admin_get(&self, path: &str) -> Value {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(self.admin.as_ref().unwrap().get(path)).unwrap()
    }

    /// Polls processor `name` until `done` (120 s at most).
    fn wait_processor(&self, name: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let p = self.admin_get(&format!("/v1/processors/{name}"));
            if done(&p) {
                return p;
            }
            assert!(Instant::now() < deadline, "waited 120 s: {p}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and the JSON summary.
    fn stop(mut self) -> Value {
        let child = self.child.take().unwrap();
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        summary(&child.wait_with_output().unwrap())
    }

    /// SIGKILL.
    fn kill(mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }
}

impl Drop for Child_ {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `n` NDJSON readings of client `c`, numbered from `from`.
fn readings(c: usize, from: usize, n: usize) -> Vec<u8> {
    let mut body = Vec::new();
    for i in from..from + n {
        body.extend(format!("{{\"device\":\"c{c}\",\"n\":{i},\"v\":{}}}\n", i * 7).into_bytes());
    }
    body
}

/// (device, n) of every record of `topic`, with how often each occurs.
fn counted(env: &Env, topic: &str) -> BTreeMap<(String, u64), usize> {
    let mut out = BTreeMap::new();
    for r in env.records(topic) {
        let v: Value = serde_json::from_slice(r.record.value.as_deref().unwrap()).unwrap();
        *out.entry((
            v["device"].as_str().unwrap().to_owned(),
            v["n"].as_u64().unwrap(),
        ))
        .or_insert(0) += 1;
    }
    out
}

const HTTP_CONFIG: &str = r#"
[[ingest.topic]]
name = "readings"
key_pointer = "/device"
[ingest.http]
listen = "127.0.0.1:0"
"#;

#[test]
fn one_hundred_clients_times_one_hundred_records_each_acknowledged_record_is_in_the_log_once() {
    let env = Env::new();
    let host = Child_::start(&env, &env.config(HTTP_CONFIG), &[], true);
    let url = host.ingest.clone().unwrap();
    let answers: Vec<Value> = rt().block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..100 {
            let url = url.clone();
            tasks.spawn(async move {
                let mut client = IngestClient::new(&url, None, None).unwrap();
                let a = client
                    .post(
                        "readings",
                        "",
                        readings(c, 0, 100),
                        "application/x-ndjson",
                        c % 2 == 0,
                    )
                    .await
                    .unwrap();
                assert_eq!(a.status, 200, "{}", a.body);
                a.body
            });
        }
        let mut out = Vec::new();
        while let Some(a) = tasks.join_next().await {
            out.push(a.unwrap());
        }
        out
    });
    assert!(answers.iter().all(|a| a["accepted"] == 100), "{answers:?}");
    host.stop();
    let seen = counted(&env, "readings");
    assert_eq!(seen.len(), 10_000);
    assert!(seen.values().all(|&n| n == 1));
    // Each answer's first offset is where its first record is.
    let recs = env.records("readings");
    for a in &answers {
        let first = a["first_offsets"]["0"].as_u64().unwrap();
        let v: Value =
            serde_json::from_slice(recs[first as usize].record.value.as_deref().unwrap()).unwrap();
        assert_eq!(v["n"], 0);
    }
    assert_eq!(
        recs[0].record.key.as_deref().map(|k| k.starts_with(b"c")),
        Some(true)
    );
}

#[test]
fn a_sigkill_right_after_a_200_loses_no_acknowledged_record() {
    let env = Env::new();
    let host = Child_::start(&env, &env.config(HTTP_CONFIG), &[], true);
    let url = host.ingest.clone().unwrap();
    let acked = Arc::new(std::sync::Mutex::new(Vec::<(usize, usize)>::new()));
    let oks = Arc::new(AtomicU64::new(0));
    let killer = Arc::new(std::sync::Mutex::new(Some(host)));
    rt().block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..20 {
            let (url, acked, oks, killer) =
                (url.clone(), acked.clone(), oks.clone(), killer.clone());
            tasks.spawn(async move {
                let mut client = IngestClient::new(&url, None, None).unwrap();
                for round in 0..1000 {
                    match client
                        .post(
                            "readings",
                            "",
                            readings(c, round * 10, 10),
                            "application/x-ndjson",
                            false,
                        )
                        .await
                    {
                        Ok(a) if a.status == 200 => {
                            acked.lock().unwrap().push((c, round));
                            // The 300th 200 in all: kill the host right now.
                            if oks.fetch_add(1, Ordering::SeqCst) + 1 == 300
                                && let Some(h) = killer.lock().unwrap().take()
                            {
                                h.kill();
                            }
                        }
                        Ok(a) => panic!("{}: {}", a.status, a.body),
                        Err(_) => return,
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
    assert!(killer.lock().unwrap().is_none(), "the host was not killed");
    let seen = counted(&env, "readings");
    let acked = acked.lock().unwrap();
    assert!(acked.len() >= 300);
    for &(c, round) in acked.iter() {
        for i in round * 10..round * 10 + 10 {
            assert_eq!(
                seen.get(&(format!("c{c}"), i as u64)),
                Some(&1),
                "c{c} n{i} acknowledged but not in the log once"
            );
        }
    }
}

/// A sha256 line for a token.
fn digest(token: &str) -> String {
    tidewater::streams::ingest::http::token_digest(token)
}

#[test]
fn bad_requests_get_their_exact_status_and_append_nothing() {
    let env = Env::new();
    let config = env.config(&format!(
        r#"
[[topic]]
name = "readings"
[[topic]]
name = "other"
[ingest]
create_topics = false
[[ingest.topic]]
name = "readings"
key_pointer = "/device"
[ingest.http]
listen = "127.0.0.1:0"
max_body_bytes = 3000
max_records = 5
max_record_bytes = 200
[[ingest.http.token]]
name = "b01"
sha256 = "{}"
topics = ["readings", "missing"]
key_prefix = "buoy-b01"
"#,
        digest("device-token-b01")
    ));
    let host = Child_::start(&env, &config, &[], true);
    let url = host.ingest.clone().unwrap();
    let post_q = |token: Option<&str>, topic: &str, query: &str, body: &[u8], ct: &str| {
        rt().block_on(async {
            let mut c = IngestClient::new(&url, token.map(str::to_owned), None).unwrap();
            let a = c
                .post(topic, query, body.to_vec(), ct, false)
                .await
                .unwrap();
            (
                a.status,
                a.body["error"]["code"].as_str().unwrap_or("").to_owned(),
                a.body,
            )
        })
    };
    let post = |token: Option<&str>, topic: &str, body: &[u8], ct: &str| {
        post_q(token, topic, "", body, ct)
    };
    let tok = Some("device-token-b01");
    let nd = "application/x-ndjson";
    let good = b"{\"device\":\"buoy-b01\",\"t\":1}\n{\"device\":\"buoy-b01\",\"t\":2}\n";
    let (s, _, body) = post(tok, "readings", good, nd);
    assert_eq!(
        (s, &body),
        (200, &json!({"accepted": 2, "first_offsets": {"0": 0}}))
    );

    let (s, code, body) = post(
        tok,
        "readings",
        b"{\"device\":\"buoy-b01\"}\n{\"device\":\n\n{\"device\":\"buoy-b01\"}\nnope\n",
        nd,
    );
    assert_eq!((s, code.as_str()), (400, "malformed"));
    let lines: Vec<u64> = body["error"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [2, 5], "{body}");
    let (s, code, body) = post(
        tok,
        "readings",
        b"{\"device\":\"buoy-b01\",\"a\":1}{\"a\":2}\n",
        nd,
    );
    assert_eq!((s, code.as_str()), (400, "malformed"));
    assert_eq!(body["error"]["lines"][0]["line"], 1);
    assert!(
        body["error"]["lines"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("more than one value"),
        "{body}"
    );
    let big_body = readings(0, 0, 100);
    assert_eq!(post(tok, "readings", &big_body, nd).0, 413);
    assert_eq!(post(tok, "readings", &big_body, nd).1, "body-too-large");
    let big_record = format!(
        "{{\"device\":\"buoy-b01\",\"pad\":\"{}\"}}\n",
        "x".repeat(300)
    );
    let (s, code, body) = post(tok, "readings", big_record.as_bytes(), nd);
    assert_eq!((s, code.as_str()), (413, "record-too-large"));
    assert_eq!(
        body["error"]["lines"][0]["reason"],
        format!(
            "the record is {} bytes, the limit is 200 bytes",
            big_record.len() - 1
        )
    );
    let six = "{\"device\":\"buoy-b01\"}\n".repeat(6);
    assert_eq!(post(tok, "readings", six.as_bytes(), nd).0, 413);
    assert_eq!(
        post(tok, "readings", six.as_bytes(), nd).1,
        "too-many-records"
    );
    assert_eq!(post(None, "readings", good, nd).1, "unauthorized");
    assert_eq!(post(None, "readings", good, nd).0, 401);
    assert_eq!(post(Some("wrong"), "readings", good, nd).0, 401);
    let (s, code, _) = post(tok, "other", good, nd);
    assert_eq!((s, code.as_str()), (403, "forbidden-topic"));
    let (s, code, body) = post(
        tok,
        "readings",
        b"{\"device\":\"buoy-b01\"}\n{\"device\":\"cgm-3\"}\n",
        nd,
    );
    assert_eq!((s, code.as_str()), (403, "forbidden-key"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("record 2 has key \"cgm-3\": token \"b01\" may write only keys starting with \"buoy-b01\""),
        "{body}"
    );
    // A topic without [[ingest.topic]] has no key pointer: the envelope gives the key.
    let (s, code, _) = post_q(
        tok,
        "missing",
        "envelope=true",
        b"{\"key\":\"buoy-b01\",\"value\":{\"t\":3}}\n",
        nd,
    );
    assert_eq!((s, code.as_str()), (404, "no-such-topic"));
    let (s, code, _) = post(tok, "readings", good, "text/csv");
    assert_eq!((s, code.as_str()), (415, "unsupported-media-type"));
    let (s, code, body) = post_q(tok, "readings", "partitions=two", good, nd);
    assert_eq!((s, code.as_str()), (400, "bad-request"), "{body}");
    // The host's own token (for produce on the same machine) may write any topic.
    let own = std::fs::read_to_string(env.data_dir().join("ingest.token")).unwrap();
    assert_eq!(
        post(Some(&own), "other", b"{\"device\":\"x\"}\n", nd).0,
        200
    );
    let summary = host.stop();
    assert!(summary["processors"].as_array().unwrap().is_empty());
    assert_eq!(
        env.values("readings"),
        [
            "{\"device\":\"buoy-b01\",\"t\":1}",
            "{\"device\":\"buoy-b01\",\"t\":2}"
        ]
    );
    assert_eq!(env.values("other"), ["{\"device\":\"x\"}"]);
    env.with_log(|log| assert_eq!(log.partitions("missing").unwrap(), None));
}

#[test]
fn run_refuses_to_listen_for_ingest_on_a_non_loopback_address_without_tokens() {
    let env = Env::new();
    let config = env.config("[ingest.http]\nlisten = \"0.0.0.0:0\"\n");
    let out = env
        .cmd()
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ingest.http would listen on 0.0.0.0:0, which is not a loopback address, without device tokens"), "{err}");
}

/// A CA and a server certificate for 127.0.0.1 it signed, made with the
/// openssl command; returns (ca.pem, cert.pem, key.pem).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=tidewater test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "req.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "req.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

#[test]
fn tls_with_the_configured_certificate() {
    let env = Env::new();
    let (ca, cert, key) = certificates(env.dir.path());
    let config = env.config(&format!(
        "[ingest.http]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    let host = Child_::start(&env, &config, &[], true);
    let url = host.ingest.clone().unwrap();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    rt().block_on(async {
        let mut c = IngestClient::new(&url, None, Some(&ca)).unwrap();
        let a = c
            .post(
                "t",
                "",
                b"{\"a\":1}\n".to_vec(),
                "application/x-ndjson",
                false,
            )
            .await
            .unwrap();
        assert_eq!(a.status, 200, "{}", a.body);
        // Without the CA the certificate is not trusted.
        let mut c = IngestClient::new(&url, None, None).unwrap();
        let e = c
            .post(
                "t",
                "",
                b"{\"a\":1}\n".to_vec(),
                "application/x-ndjson",
                false,
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("TLS handshake"), "{e}");
    });
    // produce through the running host over https, trusting the CA.
    let file = env.dir.path().join("in.ndjson");
    std::fs::write(&file, "{\"a\":2}\n").unwrap();
    let out = env
        .cmd()
        .args(["produce", "t", "--file"])
        .arg(&file)
        .arg("--ingest-ca")
        .arg(&ca)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    host.stop();
    assert_eq!(env.values("t"), ["{\"a\":1}", "{\"a\":2}"]);
}

#[test]
fn over_the_disk_quota_ingest_gets_503_with_retry_after_and_resumes_once_retention_frees_room() {
    let env = Env::new();
    let config = env.config(
        r#"
[log]
max_bytes = 20000
maintenance_interval = "100ms"
[[topic]]
name = "q"
retention = "3s"
[ingest.http]
listen = "127.0.0.1:0"
"#,
    );
    let host = Child_::start(&env, &config, &[], true);
    let url = host.ingest.clone().unwrap();
    let (accepted, refused_at, resumed) = rt().block_on(async {
        let mut c = IngestClient::new(&url, None, None).unwrap();
        let mut accepted = 0u64;
        let body = |i: u64| format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(400)).into_bytes();
        let refused = loop {
            let a = c
                .post("q", "", body(accepted), "application/x-ndjson", false)
                .await
                .unwrap();
            if a.status != 200 {
                break a;
            }
            accepted += 1;
            assert!(accepted < 1000, "never refused");
        };
        assert_eq!(refused.status, 503, "{}", refused.body);
        assert_eq!(refused.body["error"]["code"], "over-quota");
        assert_eq!(refused.retry_after, Some(Duration::from_secs(1)));
        let refused_at = accepted;
        // The same record again until retention has freed room (bounded).
        let deadline = Instant::now() + Duration::from_secs(60);
        let resumed = loop {
            let a = c
                .post("q", "", body(accepted), "application/x-ndjson", false)
                .await
                .unwrap();
            if a.status == 200 {
                accepted += 1;
                break Instant::now();
            }
            assert_eq!(a.status, 503);
            assert!(Instant::now() < deadline, "ingest did not resume");
            tokio::time::sleep(a.retry_after.unwrap() / 10).await;
        };
        (accepted, refused_at, resumed)
    });
    let _ = resumed;
    host.stop();
    // No acknowledged record is missing from the offsets, none refused was appended.
    env.with_log(|log| {
        let p = log
            .topics()
            .unwrap()
            .into_iter()
            .find(|t| t.name == "q")
            .unwrap()
            .partitions[0];
        assert_eq!(p.end, accepted);
        assert_eq!(accepted, refused_at + 1);
        assert!(p.start > 0, "retention removed nothing");
    });
}

/// A config with `echo` reading `readings` (ingested over HTTP).
fn echo_config(env: &Env, extra: &str) -> PathBuf {
    env.config(&format!(
        r#"{HTTP_CONFIG}
[[processor]]
name = "echo"
component = "{}"
inputs = ["readings"]
output = "out"
idempotency.key = "json:/device,/n"
{extra}
"#,
        plugin("echo").display()
    ))
}

/// Sends `requests` requests of 100 records from 10 clients; all must be 200.
fn ingest_all(url: &str, requests: usize) {
    rt().block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..10 {
            let url = url.to_owned();
            tasks.spawn(async move {
                let mut client = IngestClient::new(&url, None, None).unwrap();
                for r in 0..requests / 10 {
                    let a = client
                        .post(
                            "readings",
                            "",
                            readings(c, r * 100, 100),
                            "application/x-ndjson",
                            false,
                        )
                        .await
                        .unwrap();
                    assert_eq!(a.status, 200, "{}", a.body);
                }
            });
        }
        while let Some(t) = tasks.join_next().await {
            t.unwrap();
        }
    });
}

#[test]
fn a_paused_processor_does_not_hold_up_ingest() {
    let env = Env::new();
    let host = Child_::start(
        &env,
        &echo_config(&env, ""),
        &["--paused", "--admin", "127.0.0.1:0"],
        true,
    );
    ingest_all(host.ingest.as_ref().unwrap(), 100);
    // Every record was acknowledged while the processor read none.
    let p = host.admin_get("/v1/processors/echo");
    assert_eq!(
        (p["paused"].as_bool(), p["counters"]["events_in"].as_u64()),
        (Some(true), Some(0)),
        "{p}"
    );
    let rt = rt();
    rt.block_on(
        host.admin
            .as_ref()
            .unwrap()
            .post("/v1/processors/echo/resume", &json!({})),
    )
    .unwrap();
    host.wait_processor("echo", |p| p["counters"]["outputs"] == 10_000);
    host.stop();
    assert_eq!(counted(&env, "readings").len(), 10_000);
    assert_eq!(env.records("out").len(), 10_000);
}

#[test]
fn a_processor_failing_on_every_event_does_not_hold_up_ingest() {
    let env = Env::new();
    let config = env.config(&format!(
        r#"{HTTP_CONFIG}
[[processor]]
name = "probe"
component = "{}"
inputs = ["readings"]
output = "out"
batch.max_records = 1
limits.call_deadline = "50ms"
"#,
        plugin("probe").display()
    ));
    let host = Child_::start(&env, &config, &["--admin", "127.0.0.1:0"], true);
    let url = host.ingest.clone().unwrap();
    // Every value is the probe's "spin": each event runs to its 50 ms deadline.
    rt().block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let url = url.clone();
            tasks.spawn(async move {
                let mut client = IngestClient::new(&url, None, None).unwrap();
                for _ in 0..20 {
                    let body = b"spin".to_vec();
                    let a = client
                        .post("readings", "", body, "application/octet-stream", false)
                        .await;
                    assert_eq!(a.unwrap().status, 200);
                }
            });
        }
        while let Some(t) = tasks.join_next().await {
            t.unwrap();
        }
    });
    let p = host.admin_get("/v1/processors/probe");
    let read = p["counters"]["events_in"].as_u64().unwrap();
    // 200 requests acknowledged; the processor had read a fraction of them.
    assert!(read < 200, "{p}");
    host.stop();
    assert_eq!(env.records("readings").len(), 200);
}

#[test]
fn a_device_clock_a_day_ahead_is_stored_with_the_ingest_time_and_counted() {
    let env = Env::new();
    let config = env.config(
        r#"
[[ingest.topic]]
name = "readings"
key_pointer = "/device"
timestamp_pointer = "/ts"
[ingest.http]
listen = "127.0.0.1:0"
"#,
    );
    let host = Child_::start(&env, &config, &[], true);
    let url = host.ingest.clone().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let ahead = now + 86_400_000;
    let fine = now - 60_000;
    let body = format!(
        "{{\"device\":\"a\",\"ts\":{ahead},\"v\":1}}\n\
         {{\"device\":\"a\",\"ts\":{fine},\"v\":2}}\n\
         {{\"device\":\"a\",\"ts\":1000,\"v\":3}}\n"
    );
    let answer = rt().block_on(async {
        let mut c = IngestClient::new(&url, None, None).unwrap();
        c.post(
            "readings",
            "",
            body.into_bytes(),
            "application/x-ndjson",
            false,
        )
        .await
        .unwrap()
    });
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["accepted"], 3);
    // The answer says what the policy replaced, and its window (20 years
    // of 365.25 days behind).
    assert_eq!(
        answer.body["device_time_replaced"],
        json!({"ahead": 1, "behind": 1, "max_ahead_ms": 900_000, "max_behind_ms": 631_152_000_000u64})
    );
    host.stop();
    let got = env.records("readings");
    assert_eq!(got.len(), 3);
    let v = |r: &LogRecord| -> u64 {
        serde_json::from_slice::<Value>(r.record.value.as_deref().unwrap()).unwrap()["v"]
            .as_u64()
            .unwrap()
    };
    let by_v: BTreeMap<u64, &LogRecord> = got.iter().map(|r| (v(r), r)).collect();
    // A day ahead: the ingest time (the append time), the device's in the header.
    assert_eq!(by_v[&1].record.timestamp_ms, by_v[&1].append_ms as i64);
    assert_eq!(
        header(by_v[&1], "tidewater-device-time"),
        Some(ahead.to_string())
    );
    // A minute behind: its own time, no header.
    assert_eq!(by_v[&2].record.timestamp_ms, fine);
    assert_eq!(header(by_v[&2], "tidewater-device-time"), None);
    // 1970: the ingest time too.
    assert_eq!(by_v[&3].record.timestamp_ms, by_v[&3].append_ms as i64);
    assert_eq!(
        header(by_v[&3], "tidewater-device-time"),
        Some("1000".to_owned())
    );
    let out = env
        .cmd()
        .args(["topics", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let topics: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(topics[0]["name"], "readings");
    assert_eq!(
        topics[0]["device_time_replaced"],
        json!({"ahead": 1, "behind": 1})
    );
}

/// Lines 1..=`count` of NDJSON `{"device":"d","n":N,"pad":"x…"}`, the pad
/// `pad(N)` times `fill`.
fn numbered_lines(count: u64, fill: &str, pad: impl Fn(u64) -> usize) -> Vec<String> {
    (1..=count)
        .map(|n| {
            format!(
                "{{\"device\":\"d\",\"n\":{n},\"pad\":\"x{}\"}}",
                fill.repeat(pad(n))
            )
        })
        .collect()
}

/// Writes `lines` to `<topic>.ndjson` and produces it to `topic` through a
/// host started with `config`, with `args` added; stops the host and
/// returns the exit code and stderr.
fn produce_through_a_host(
    env: &Env,
    config: &str,
    topic: &str,
    lines: &[String],
    args: &[&str],
) -> (Option<i32>, String) {
    let file = env.dir.path().join(format!("{topic}.ndjson"));
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let host = Child_::start(env, &env.config(config), &[], true);
    let out = env
        .cmd()
        .args(["produce", topic, "--key-pointer", "/device"])
        .args(args)
        .arg("--file")
        .arg(&file)
        .output()
        .unwrap();
    host.stop();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("through the running host"), "{err}");
    (out.status.code(), err)
}

/// The `n` of every record of `topic`, in order.
fn numbers(env: &Env, topic: &str) -> Vec<u64> {
    env.records(topic)
        .iter()
        .map(|r| {
            let v: serde_json::Value =
                serde_json::from_slice(r.record.value.as_deref().unwrap()).unwrap();
            v["n"].as_u64().unwrap()
        })
        .collect()
}

/// Through a running host, a record it refuses for its size (over
/// `max_record_bytes`, or over what one request holds) is reported at its
/// line and kept, cut to 1 KiB, in `<topic>.rejected`; every other record
/// of the file is stored, once, in order.
#[test]
fn through_a_running_host_a_record_too_large_is_set_aside_and_the_rest_stored() {
    let env = Env::new();
    let lines = numbered_lines(3000, "x", |n| match n {
        1500 => 2_000_000,
        2800 => 17_000_000,
        _ => 10,
    });
    let (code, err) =
        produce_through_a_host(&env, HTTP_CONFIG, "big", &lines, &["--chunk", "1000"]);
    assert_eq!(code, Some(2), "{err}");
    // The host measures the record's value; a request holds the envelope.
    let too_large = format!(
        "big.ndjson:1500: the host refused the record: the record is {} bytes, the limit is 1048576 bytes\n",
        lines[1499].len()
    );
    assert!(err.contains(&too_large), "{err}");
    let (_, sent) = err
        .split_once("big.ndjson:2800: the host refused the record: the record is ")
        .expect("line 2800 reported");
    let (size, rest) = sent.split_once(' ').unwrap();
    assert!(size.parse::<usize>().unwrap() > 16_777_216, "{err}");
    assert!(
        rest.starts_with("bytes as sent, more than a request to the running host holds (16777216 bytes, its ingest.http.max_body_bytes): produce it with the host stopped\n"),
        "{err}"
    );
    assert!(err.contains("big: appended 2998 events"), "{err}");
    let want: Vec<u64> = (1..=3000).filter(|n| ![1500, 2800].contains(n)).collect();
    assert_eq!(numbers(&env, "big"), want);
    let kept: Vec<(String, usize)> = env
        .records("big.rejected")
        .iter()
        .map(|r| {
            let line = header(r, "tidewater-source-line").unwrap();
            let n: usize = line.parse().unwrap();
            let value = r.record.value.as_deref().unwrap();
            assert_eq!(value, &lines[n - 1].as_bytes()[..1024], "line {n}");
            let why = header(r, "tidewater-error-message").unwrap();
            assert!(why.contains("(kept: the first 1024 of its "), "{why}");
            (line, value.len())
        })
        .collect();
    assert_eq!(kept, [("1500".to_owned(), 1024), ("2800".to_owned(), 1024)]);
}

/// A host with small limits: `produce` keeps its requests within them (it
/// reads them from the data dir), reports each refused record once (also
/// with `--redeliver-percent`), and stores every other record in order.
#[test]
fn produce_keeps_within_a_running_hosts_limits() {
    let env = Env::new();
    let mut lines = numbered_lines(200, "é", |n| if n == 50 || n == 51 { 3000 } else { 100 });
    lines[119] = "not json".to_owned();
    let config = "[ingest.http]\nlisten = \"127.0.0.1:0\"\nmax_record_bytes = 5000\n\
                  max_body_bytes = 20000\nmax_records = 7\n";
    let (code, err) = produce_through_a_host(
        &env,
        config,
        "small",
        &lines,
        &["--redeliver-percent", "50"],
    );
    assert_eq!(code, Some(2), "{err}");
    for n in [50, 51] {
        let report = format!(
            "small.ndjson:{n}: the host refused the record: the record is {} bytes, the limit is 5000 bytes\n",
            lines[n - 1].len()
        );
        assert_eq!(err.matches(&report).count(), 1, "{err}");
    }
    assert_eq!(
        err.matches("small.ndjson:120: not JSON").count(),
        1,
        "{err}"
    );
    assert!(
        err.contains("; 3 bad lines kept in topic small.rejected"),
        "{err}"
    );
    let stored = numbers(&env, "small");
    let want: Vec<u64> = (1..=200).filter(|n| ![50, 51, 120].contains(n)).collect();
    assert_eq!(stored[..want.len()], want[..]);
    let rejected: Vec<(String, usize)> = env
        .records("small.rejected")
        .iter()
        .map(|r| {
            let value = r.record.value.as_deref().unwrap();
            // Cut at a character: the text stays UTF-8.
            assert!(std::str::from_utf8(value).is_ok(), "{value:?}");
            (header(r, "tidewater-source-line").unwrap(), value.len())
        })
        .collect();
    // 29 bytes before the first "é", 2 bytes each: byte 1,024 would split one.
    assert_eq!(
        rejected,
        [
            ("120".to_owned(), 8),
            ("50".to_owned(), 1023),
            ("51".to_owned(), 1023)
        ]
    );
}

#[test]
fn produce_works_the_same_with_and_without_a_running_host() {
    let input = "{\"device\":\"a\",\"ts\":\"2020-01-01T00:00:00Z\",\"v\":1}\n\
                 {\"device\":\"b\",\"ts\":1000,\"v\":2}\n\
                 not json\n\
                 \n\
                 {\"device\":\"c\",\"ts\":2000,\"v\":[1, 2]}\n\
                 {\"ts\":3000}\n";
    let run_produce = |env: &Env| {
        let file = env.dir.path().join("in.ndjson");
        std::fs::write(&file, input).unwrap();
        let out = env
            .cmd()
            .args([
                "produce",
                "readings",
                "--partitions",
                "3",
                "--key-pointer",
                "/device",
                "--timestamp-pointer",
                "/ts",
                "-H",
                "site=7",
                "-H",
                "site=8",
                "--file",
            ])
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let alone = Env::new();
    let err_alone = run_produce(&alone);
    let hosted = Env::new();
    let host = Child_::start(&hosted, &hosted.config(HTTP_CONFIG), &[], true);
    let err_hosted = run_produce(&hosted);
    host.stop();
    assert!(
        err_hosted.contains("through the running host"),
        "{err_hosted}"
    );
    for err in [&err_alone, &err_hosted] {
        assert!(err.contains("in.ndjson:3: not JSON"), "{err}");
        assert!(err.contains("in.ndjson:6: no key at /device"), "{err}");
        assert!(err.contains("appended 3 events"), "{err}");
        // ts 1000 and 2000 (1970): the summary line either way, the host's
        // window (the default) through the host.
        assert!(
            err.contains("readings: 2 records stamped with the ingest time, their device clock out of the window (0 ahead by more than 15 min, 2 behind by more than 20 years or at/before 1970); each keeps its device time in the header tidewater-device-time"),
            "{err}"
        );
    }
    let view = |env: &Env, topic: &str| -> Vec<String> {
        env.records(topic)
            .into_iter()
            .map(|r| {
                let mut rec = r.record;
                if topic.ends_with(".rejected") {
                    rec.headers.retain(|(n, _)| n != "tidewater-source-file");
                    // Stamped with the time the line was read.
                    assert!(rec.timestamp_ms > 1_700_000_000_000, "{rec:?}");
                    rec.timestamp_ms = 0;
                } else if rec.header("tidewater-device-time").is_some() {
                    // A device time in 1970: the ingest time, which is the append time.
                    assert_eq!(rec.timestamp_ms, r.append_ms as i64, "{rec:?}");
                    rec.timestamp_ms = 0;
                }
                format!("{}@{} {:?}", r.partition, r.offset, rec)
            })
            .collect()
    };
    for topic in ["readings", "readings.rejected"] {
        assert_eq!(view(&alone, topic), view(&hosted, topic), "{topic}");
    }
    assert_eq!(alone.records("readings").len(), 3);
    // Either way the device-time policy applied: ts 1000 and 2000 (1970)
    // are kept in the header, the RFC 3339 time of 2020 is the timestamp.
    for env in [&alone, &hosted] {
        let mut times: Vec<(i64, Option<String>)> = env
            .records("readings")
            .into_iter()
            .map(|r| {
                let device = header(&r, "tidewater-device-time");
                let ts = if device.is_some() {
                    0
                } else {
                    r.record.timestamp_ms
                };
                (ts, device)
            })
            .collect();
        times.sort();
        assert_eq!(
            times,
            [
                (0, Some("1000".to_owned())),
                (0, Some("2000".to_owned())),
                (1_577_836_800_000, None)
            ]
        );
    }
    assert_eq!(
        alone.with_log(|l| l.partitions("readings").unwrap()),
        Some(3)
    );
    let lines: BTreeSet<String> = alone
        .records("readings.rejected")
        .iter()
        .map(|r| header(r, "tidewater-source-line").unwrap())
        .collect();
    assert_eq!(
        lines,
        ["3".to_owned(), "6".to_owned()].into_iter().collect()
    );
}

#[test]
fn csv_a_quote_left_open_is_rejected_at_its_line_with_and_without_a_running_host() {
    // Row 3 opens a quote it never closes: csv would read rows 3 to 5 as
    // one last cell. It is a bad row at line 3 instead, the text kept.
    let input = "time,v,note\n\
                 2024-03-01T00:00:00Z,1,ok\n\
                 2024-03-01T01:00:00Z,2,\"said \"\"hi\n\
                 2024-03-01T02:00:00Z,3,lost?\n\
                 2024-03-01T03:00:00Z,4,lost?\n";
    let run_produce = |env: &Env| {
        let file = env.dir.path().join("open.csv");
        std::fs::write(&file, input).unwrap();
        let out = env
            .cmd()
            .args([
                "produce",
                "readings",
                "--device",
                "d",
                "--time-column",
                "time",
                "--csv",
            ])
            .arg(&file)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{err}");
        err
    };
    let alone = Env::new();
    let err_alone = run_produce(&alone);
    let hosted = Env::new();
    let host = Child_::start(&hosted, &hosted.config(HTTP_CONFIG), &[], true);
    let err_hosted = run_produce(&hosted);
    host.stop();
    assert!(
        err_hosted.contains("through the running host"),
        "{err_hosted}"
    );
    for (env, err) in [(&alone, &err_alone), (&hosted, &err_hosted)] {
        assert!(
            err.contains("open.csv:3: a double quote opened on this line is never closed: lines 3 to 5 (the end of the file) would be one cell"),
            "{err}"
        );
        assert!(err.contains("readings: appended 1 event from"), "{err}");
        assert!(
            err.contains("; 1 bad row kept in topic readings.rejected"),
            "{err}"
        );
        let stored: Vec<Vec<u8>> = env
            .records("readings")
            .into_iter()
            .map(|r| r.record.value.unwrap())
            .collect();
        assert_eq!(
            stored,
            [br#"{"device":"d","ts":"2024-03-01T00:00:00Z","v":1,"note":"ok"}"#.to_vec()]
        );
        let rejected = env.records("readings.rejected");
        assert_eq!(rejected.len(), 1);
        assert_eq!(
            header(&rejected[0], "tidewater-source-line").as_deref(),
            Some("3")
        );
        assert_eq!(
            String::from_utf8(rejected[0].record.value.clone().unwrap()).unwrap(),
            "2024-03-01T01:00:00Z,2,\"said \"\"hi\n2024-03-01T02:00:00Z,3,lost?\n2024-03-01T03:00:00Z,4,lost?"
        );
    }
}

#[test]
fn a_csv_body_is_refused_as_an_unsupported_media_type_naming_the_ones_taken() {
    let env = Env::new();
    let host = Child_::start(&env, &env.config(HTTP_CONFIG), &[], true);
    let url = host.ingest.clone().unwrap();
    let answer = rt().block_on(async {
        let mut c = IngestClient::new(&url, None, None).unwrap();
        c.post(
            "readings",
            "",
            b"time,v\n2024-03-01T00:00:00Z,\"1\n".to_vec(),
            "text/csv",
            false,
        )
        .await
        .unwrap()
    });
    host.stop();
    assert_eq!(answer.status, 415, "{}", answer.body);
    assert_eq!(
        answer.body["error"]["message"],
        "Content-Type \"text/csv\" is not one of application/x-ndjson, application/json, application/octet-stream (CSV is read by `tidewater produce TOPIC --csv FILE`, which sends its rows here and reports each bad row's line)"
    );
    assert!(env.records("readings").is_empty());
}

// ---------------------------------------------------------------- MQTT

/// The broker `make test` started (mqtt/mosquitto.sh), or `None` (and a
/// note) when there is none and none is required.
fn broker() -> Option<String> {
    if let Ok(b) = std::env::var("TIDEWATER_TEST_MQTT") {
        return Some(b);
    }
    let file = root().join("target/mosquitto/url");
    let up = std::fs::read_to_string(&file)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|u| {
            u.strip_prefix("mqtt://")
                .is_some_and(|a| std::net::TcpStream::connect(a).is_ok())
        });
    if up.is_none() {
        assert!(
            std::env::var("TIDEWATER_REQUIRE_MQTT").is_err(),
            "TIDEWATER_REQUIRE_MQTT is set but no broker answers at {} (run mqtt/mosquitto.sh up)",
            file.display()
        );
        eprintln!(
            "skipped: no MQTT broker (run mqtt/mosquitto.sh up, or make test which starts one)"
        );
    }
    up
}

/// Publishes `n` QoS 1 messages `{"device":"d<i%50>","n":i}` to
/// `<prefix>/d<i%50>/readings`; returns how many the broker acknowledged.
async fn publish(url: &str, prefix: &str, n: u64) -> u64 {
    let addr = url.trim_start_matches("mqtt://");
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut o = rumqttc::MqttOptions::new(format!("pub-{prefix}"), host, port.parse().unwrap());
    o.set_inflight(200).set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = rumqttc::AsyncClient::new(o, 1000);
    let acks = Arc::new(AtomicU64::new(0));
    let a2 = acks.clone();
    let poller = tokio::spawn(async move {
        while a2.load(Ordering::SeqCst) < n {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                    a2.fetch_add(1, Ordering::SeqCst);
                }
                Ok(_) => {}
                Err(e) => panic!("publisher: {e}"),
            }
        }
    });
    for i in 0..n {
        let d = i % 50;
        let payload = format!("{{\"device\":\"d{d}\",\"n\":{i}}}");
        client
            .publish(
                format!("{prefix}/d{d}/readings"),
                rumqttc::QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(300), poller)
        .await
        .unwrap()
        .unwrap();
    acks.load(Ordering::SeqCst)
}

#[test]
fn mqtt_50k_messages_with_the_host_sigkilled_mid_burst_every_message_is_in_the_log_and_processed_once()
 {
    let Some(url) = broker() else { return };
    let env = Env::new();
    let prefix = format!("t{}-{}", std::process::id(), tidewater::db::now_ms());
    let config = env.config(&format!(
        r#"
[[ingest.mqtt]]
url = "{url}"
client_id = "{prefix}"
topics = {{ "{prefix}/+/readings" = "readings" }}

[[processor]]
name = "echo"
component = "{}"
inputs = ["readings"]
output = "out"
idempotency.key = "json:/device,/n"
"#,
        plugin("echo").display()
    ));
    let first = Child_::start(&env, &config, &["--admin", "127.0.0.1:0"], false);
    first.wait_log("MQTT subscribed");
    let total = 50_000u64;
    let rt = rt();
    let publisher = rt.spawn({
        let (url, prefix) = (url.clone(), prefix.clone());
        async move { publish(&url, &prefix, total).await }
    });
    first.wait_processor("echo", |p| {
        p["counters"]["events_in"].as_u64() >= Some(5_000)
    });
    first.kill();
    let acked = rt.block_on(publisher).unwrap();
    assert_eq!(acked, total);
    let second = Child_::start(&env, &config, &["--admin", "127.0.0.1:0"], false);
    second.wait_processor("echo", |p| {
        p["counters"]["outputs"] == total && p["lag"] == 0
    });
    second.stop();
    let seen = counted(&env, "readings");
    assert_eq!(
        seen.len() as u64,
        total,
        "every message the broker took is in the log"
    );
    let outputs = env.records("out");
    assert_eq!(
        outputs.len() as u64,
        total,
        "each payload key has exactly one output"
    );
    let keys: BTreeSet<_> = outputs
        .iter()
        .map(|r| header(r, "idempotency-key").unwrap())
        .collect();
    assert_eq!(keys.len() as u64, total);
    // Keys come from the `+` segment.
    let r = &env.records("readings")[0];
    let v: Value = serde_json::from_slice(r.record.value.as_deref().unwrap()).unwrap();
    assert_eq!(
        r.record.key.as_deref(),
        Some(v["device"].as_str().unwrap().as_bytes())
    );
    let stats = env.stats();
    assert_eq!(
        stats["echo"]["duplicates"].as_u64().unwrap() + total,
        seen.values().sum::<usize>() as u64
    );
}

/// A Mosquitto of the test's own (the one `make test` starts takes anyone):
/// TLS with `certificates`, user `dev` with password `s3cret`, no anonymous
/// clients, sessions kept in `dir` across restarts. Killed on drop.
struct PrivateBroker {
    dir: PathBuf,
    port: u16,
    child: Option<crate::kafka::KillOnDrop>,
}

impl PrivateBroker {
    fn start(dir: &Path) -> PrivateBroker {
        let (ca, cert, key) = certificates(dir);
        let passwd = std::process::Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(dir.join("passwd"))
            .args(["dev", "s3cret"])
            .output()
            .expect("mosquitto_passwd (Debian's mosquitto package)");
        assert!(passwd.status.success(), "{passwd:?}");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            dir.join("mosquitto.conf"),
            format!(
                "user root\nlistener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n\
                 cafile {}\ncertfile {}\nkeyfile {}\npersistence true\npersistence_location {}/\n\
                 autosave_interval 1\nlog_dest stderr\n",
                dir.join("passwd").display(),
                ca.display(),
                cert.display(),
                key.display(),
                dir.display()
            ),
        )
        .unwrap();
        let mut b = PrivateBroker {
            dir: dir.to_owned(),
            port,
            child: None,
        };
        b.restart();
        b
    }

    /// Starts (again) on the same port and files; waits until it answers.
    fn restart(&mut self) {
        self.stop();
        let bin = ["/usr/sbin/mosquitto", "mosquitto"]
            .into_iter()
            .find(|b| std::path::Path::new(b).exists())
            .unwrap_or("mosquitto");
        let child = std::process::Command::new(bin)
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto");
        self.child = Some(crate::kafka::KillOnDrop(child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM: Mosquitto saves its sessions and stops.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            c.wait().unwrap();
        }
    }
}

/// Publishes `{"device":"d<i>","n":i}` for `i` in `range` over TLS as `dev`
/// to `<prefix>/d<i>/readings`, QoS 1; returns once each was acknowledged.
async fn publish_tls(port: u16, ca: &Path, prefix: &str, range: std::ops::Range<u64>) {
    let mut o =
        rumqttc::MqttOptions::new(format!("pub-{prefix}-{}", range.start), "127.0.0.1", port);
    o.set_credentials("dev", "s3cret");
    o.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(Arc::new(
            tidewater::streams::ingest::client::client_tls(Some(ca)).unwrap(),
        )),
    ));
    let (client, mut events) = rumqttc::AsyncClient::new(o, 100);
    let n = range.end - range.start;
    let poller = tokio::spawn(async move {
        let mut acked = 0;
        while acked < n {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("publisher: {e}"),
            }
        }
    });
    for i in range {
        client
            .publish(
                format!("{prefix}/d{i}/readings"),
                rumqttc::QoS::AtLeastOnce,
                false,
                format!("{{\"device\":\"d{i}\",\"n\":{i}}}"),
            )
            .await
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(60), poller)
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn mqtt_over_tls_with_a_password_reconnects_after_the_broker_restarts_and_refuses_a_wrong_one() {
    if broker().is_none() {
        return; // Mosquitto is installed by `make test`, with the shared broker.
    }
    let dir = tempfile::tempdir().unwrap();
    let mut mqtt = PrivateBroker::start(dir.path());
    let ca = dir.path().join("ca.pem");
    let env = Env::new();
    let prefix = "secure";
    let port = mqtt.port;
    let config_with = |password: &str| {
        env.config(&format!(
            r#"
[[ingest.mqtt]]
url = "mqtts://127.0.0.1:{port}"
client_id = "host-{password}"
username = "dev"
password = "{password}"
ca_file = "{ca}"
max_reconnect_backoff = "500ms"
topics = {{ "{prefix}/+/readings" = "readings" }}

[[processor]]
name = "echo"
component = "{echo}"
inputs = ["readings"]
output = "out"
idempotency.key = "json:/device,/n"
"#,
            ca = ca.display(),
            echo = plugin("echo").display()
        ))
    };
    let host = Child_::start(
        &env,
        &config_with("s3cret"),
        &["--admin", "127.0.0.1:0"],
        false,
    );
    host.wait_log("MQTT subscribed");
    let rt = rt();
    rt.block_on(publish_tls(mqtt.port, &ca, prefix, 0..100));
    host.wait_processor("echo", |p| p["counters"]["outputs"] == 100);

    // The broker goes away and comes back: the host reconnects on its own,
    // its session (subscription) kept, and takes what is sent next.
    mqtt.restart();
    rt.block_on(publish_tls(mqtt.port, &ca, prefix, 100..200));
    // Messages in flight when it went (appended, their PUBACK not yet
    // sent) come again: duplicates by payload key, one output each.
    let p = host.wait_processor("echo", |p| p["counters"]["outputs"] == 200 && p["lag"] == 0);
    assert_eq!(
        p["counters"]["events_in"].as_u64().unwrap()
            - p["counters"]["duplicates"].as_u64().unwrap(),
        200,
        "{p}"
    );
    assert!(
        host.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("MQTT connection lost; reconnecting")),
        "{:?}",
        host.log.lock().unwrap()
    );
    host.stop();
    let values: BTreeSet<String> = env.values("out").into_iter().collect();
    assert_eq!(env.values("out").len(), 200);
    assert_eq!(values.len(), 200);
    assert!(
        values.contains("{\"device\":\"d199\",\"n\":199}"),
        "{values:?}"
    );

    // A wrong password: the host says why and keeps trying; nothing arrives.
    let wrong = Child_::start(&env, &config_with("wrong"), &[], false);
    wrong.wait_log("MQTT broker refused the connection (check username, password");
    wrong.kill();
}
