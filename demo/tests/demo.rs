//! `gpusched demo` end to end: the binary runs a small workload (with and without faults) and
//! its `--summary-json` and `--trace` outputs are checked: the totals add up, the faults did
//! what they should, no checker violation or validation error, the trace is valid Chrome
//! trace-event JSON with a span per job run. And a bad command line exits with status 2.
//!
//! Skipped (with a message) when no Vulkan device can be created at all. The faults run uses
//! the default rings (one per compute queue: one on lavapipe); the run without faults uses
//! two rings sharing the queue, so that dependencies cross rings in the trace.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_gpusched");

/// A fresh directory for one test's outputs.
fn out_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gpusched-demo-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create the test's output directory");
    d
}

fn run(args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    if std::env::var_os("GPUSCHED_TEST_NOVAL").is_none() {
        cmd.arg("--validation");
    }
    cmd.output().expect("run the gpusched binary")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `true` when the run could not find a Vulkan device: the test is then skipped on a
/// developer machine, and fails under CI or `GPUSCHED_REQUIRE_VULKAN=1`
/// (`vk_fault_layer::testing::skip_or_fail`).
#[track_caller]
fn no_device(o: &Output) -> bool {
    let err = String::from_utf8_lossy(&o.stderr);
    if err.contains("no Vulkan device") && !err.contains("validation layer") {
        vk_fault_layer::testing::skip_or_fail("demo", err);
        return true;
    }
    false
}

fn read_json(path: &PathBuf) -> Value {
    let s = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} not written: {e}", path.display()));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Runs `gpusched demo ARGS --summary-json .. --trace ..` into a fresh directory named after
/// `test`; returns the summary and the trace (checked with [`check_trace`]: its markers), or
/// `None` when no Vulkan device exists. The run must succeed and its totals add up.
fn demo(test: &str, args: &[&str]) -> Option<(Value, Vec<String>)> {
    let dir = out_dir(test);
    let (sj, tr) = (dir.join("summary.json"), dir.join("trace.json"));
    let mut all = vec!["demo"];
    all.extend_from_slice(args);
    all.extend_from_slice(&[
        "--summary-json",
        sj.to_str().expect("utf-8 path"),
        "--trace",
        tr.to_str().expect("utf-8 path"),
    ]);
    let o = run(&all);
    if no_device(&o) {
        return None;
    }
    assert!(o.status.success(), "{}", text(&o));
    let s = read_json(&sj);
    check_totals(&s);
    let markers = check_trace(&read_json(&tr), &s);
    let _ = std::fs::remove_dir_all(&dir);
    Some((s, markers))
}

fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("summary field {key} missing or not a count: {v}"))
}

/// The checks every summary must pass: the totals add up, nothing pending, no violation.
/// Two independent counts are compared: `published`, `sched_ok` and `sched_errors` are the
/// scheduler's own counters (every entity's `EntityStats`); `observed`, `ok` and
/// `error_total` come from callbacks on the fences the demo holds.
fn check_totals(s: &Value) {
    let published = u(s, "published");
    let ok = u(s, "ok");
    let errors = u(s, "error_total");
    assert!(published > 0, "no job was published: {s}");
    assert_eq!(u(s, "observed"), published, "fences observed != fences published: {s}");
    assert_eq!(ok + errors, published, "ok + errors observed != published: {s}");
    assert_eq!(ok, u(s, "sched_ok"), "ok observed != the scheduler's ok: {s}");
    assert_eq!(errors, u(s, "sched_errors"), "errors observed != the scheduler's errors: {s}");
    assert_eq!(u(s, "pending"), 0, "fences still pending: {s}");
    let by_kind: u64 = s["errors"]
        .as_object()
        .expect("errors by kind")
        .values()
        .map(|v| v.as_u64().expect("a count"))
        .sum();
    assert_eq!(by_kind, errors, "errors by kind do not sum to the errors: {s}");
    let prios = s["per_priority"].as_object().expect("per_priority");
    let jobs: u64 = prios.values().map(|p| u(p, "jobs")).sum();
    let prio_ok: u64 = prios.values().map(|p| u(p, "ok")).sum();
    assert_eq!(jobs, published, "jobs per priority do not sum to published: {s}");
    assert_eq!(prio_ok, ok, "ok per priority do not sum to ok: {s}");
    assert!(u(s, "ran") >= ok, "a job succeeded without running: {s}");
    assert!(u(s, "ran") <= published, "more jobs ran than were published: {s}");
    assert_eq!(u(s, "checker_violations"), 0, "checker violations: {s}");
    assert_eq!(u(s, "validation_errors"), 0, "validation errors: {s}");
    assert_eq!(u(s, "verify_failures"), 0, "wrong results: {s}");
    assert_eq!(s["totals_add_up"], Value::Bool(true), "{s}");
}

/// Validates the Chrome trace: event shapes, one span per job run, flows in pairs whose ends
/// lie on spans; returns the names of the instant markers.
fn check_trace(t: &Value, summary: &Value) -> Vec<String> {
    let events = t["traceEvents"].as_array().expect("traceEvents is an array");
    let mut spans = Vec::new();
    let (mut starts, mut finishes) = (Vec::new(), Vec::new());
    let mut markers = Vec::new();
    for e in events {
        let ph = e["ph"].as_str().unwrap_or_else(|| panic!("event without ph: {e}"));
        assert!(e["pid"].is_u64() && e["tid"].is_u64(), "pid/tid missing: {e}");
        match ph {
            "M" => assert!(e["args"]["name"].is_string(), "metadata without a name: {e}"),
            "X" => {
                let ts = e["ts"].as_f64().unwrap_or_else(|| panic!("span without ts: {e}"));
                let dur = e["dur"].as_f64().unwrap_or_else(|| panic!("span without dur: {e}"));
                assert!(ts >= 0.0 && dur >= 0.0, "negative time: {e}");
                assert!(e["name"].is_string() && e["tid"].as_u64() != Some(0), "bad span: {e}");
                spans.push((e["tid"].as_u64().expect("tid"), ts, ts + dur));
            }
            "s" => starts.push((
                e["id"].as_u64().expect("flow id"),
                e["tid"].as_u64(),
                e["ts"].as_f64(),
            )),
            "f" => {
                assert_eq!(e["bp"], "e", "flow end must bind to its enclosing slice: {e}");
                finishes.push((
                    e["id"].as_u64().expect("flow id"),
                    e["tid"].as_u64(),
                    e["ts"].as_f64(),
                ));
            }
            "i" => {
                assert_eq!(e["s"], "g", "markers are global: {e}");
                assert!(e["ts"].is_f64() || e["ts"].is_u64(), "marker without ts: {e}");
                markers.push(e["name"].as_str().expect("marker name").to_owned());
            }
            other => panic!("unexpected event type {other}: {e}"),
        }
    }
    assert_eq!(spans.len() as u64, u(summary, "ran"), "one span per job that ran");
    assert_eq!(starts.len(), finishes.len(), "flows come in s/f pairs");
    assert!(!starts.is_empty(), "the chains' dependencies appear as flows");
    let on_span = |tid: Option<u64>, ts: Option<f64>| {
        let (tid, ts) = (tid.expect("tid"), ts.expect("ts"));
        spans.iter().any(|(t, a, b)| *t == tid && *a - 1e-3 <= ts && ts <= *b + 1e-3)
    };
    for ((id, tid, ts), (id2, tid2, ts2)) in starts.iter().zip(&finishes) {
        assert_eq!(id, id2, "flow ids pair up in order");
        assert!(on_span(*tid, *ts), "flow {id} starts outside any span");
        assert!(on_span(*tid2, *ts2), "flow {id} ends outside any span");
    }
    markers
}

#[test]
fn demo_without_faults_verifies_every_round() {
    let args = ["--no-faults", "--clients", "3", "--rounds", "4", "--size", "1024"];
    let Some((s, markers)) = demo("nofaults", &args) else { return };
    assert_eq!(u(&s, "error_total"), 0, "{s}");
    assert_eq!(u(&s, "rounds_verified"), 12, "{s}");
    assert_eq!(u(&s, "published"), 12 * 4 + 1, "4 jobs a round plus the shared buffer's fill: {s}");
    assert_eq!(u(&s, "generations"), 1, "{s}");
    assert!(markers.is_empty(), "no fault, no marker: {markers:?}");
}

#[test]
fn demo_with_faults_recovers_and_adds_up() {
    let args =
        ["--clients", "3", "--rounds", "6", "--size", "1024", "--timeout-ms", "200", "--seed", "7"];
    let Some((s, markers)) = demo("faults", &args) else { return };
    assert_eq!(u(&s, "generations"), 2, "one device loss: {s}");
    assert_eq!(s["banned_clients"], serde_json::json!(["rogue"]), "{s}");
    assert!(u(&s, "timeouts") >= 1, "the hangs time out: {s}");
    assert!(u(&s, "resets") >= 1, "the TDR ran: {s}");
    assert!(s["errors"]["device_lost"].as_u64() >= Some(1) || u(&s, "rounds_skipped") >= 1, "{s}");
    assert!(u(&s, "hang_client_verified_after") >= 1, "the hung client recovers: {s}");
    assert!(u(&s["errors"], "cancelled") >= 1, "the banned rogue's queued job is cancelled: {s}");
    assert!(u(&s["errors"], "timed_out") >= u(&s, "timeouts"), "{s}");
    assert!(u(&s, "rounds_verified") >= 1, "{s}");
    for m in ["timeout", "reset", "device lost", "new device generation", "hang injected"] {
        assert!(markers.iter().any(|n| n == m), "no `{m}` marker in {markers:?}");
    }
}

#[test]
fn a_bad_flag_exits_2_and_names_it() {
    let o = Command::new(BIN).args(["demo", "--clientz", "3"]).output().expect("run");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--clientz"), "{}", text(&o));

    let o = Command::new(BIN).args(["demo", "--clients", "0"]).output().expect("run");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--clients"), "{}", text(&o));

    let o = Command::new(BIN).args(["demo", "--rounds", "2"]).output().expect("run");
    assert_eq!(o.status.code(), Some(2), "too few rounds for faults: {}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--rounds"), "{}", text(&o));

    let o = Command::new(BIN).args(["frobnicate"]).output().expect("run");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn help_documents_every_flag() {
    let o = Command::new(BIN).args(["demo", "--help"]).output().expect("run");
    assert!(o.status.success(), "{}", text(&o));
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--clients",
        "--rounds",
        "--size",
        "--validation",
        "--no-validation",
        "--timeout-ms",
        "--no-faults",
        "--seed",
        "--trace",
        "--summary-json",
        "--no-progress",
        "--device",
    ] {
        assert!(help.contains(flag), "{flag} is not in --help:\n{help}");
    }
}
