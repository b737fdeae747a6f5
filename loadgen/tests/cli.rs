//! The `loadgen` binary: argument errors, a broker that is not there, and a fixed-rate run
//! against the real broker binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn loadgen(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

#[test]
fn bad_arguments_and_a_missing_broker_get_clear_errors() {
    for (args, expected) in [
        (&["--record-size", "4"][..], "at least 8"),
        (&["--rate", "fast"][..], "--rate \"fast\""),
        (&["--acks", "2"][..], "--acks \"2\""),
        (&["--compression", "brotli"][..], "--compression \"brotli\""),
        (&["--keys", "zipf"][..], "--keys \"zipf\""),
    ] {
        let (code, text) = loadgen(args);
        assert_eq!(code, 2, "{args:?}: {text}");
        assert!(text.contains(expected), "{args:?}: {text}");
    }
    let (code, text) = loadgen(&["--bootstrap", "127.0.0.1:1", "--duration", "1"]);
    assert_eq!(code, 2);
    assert!(text.contains("127.0.0.1:1"), "{text}");
}

/// An open-loop run at 2,000 records/s for 2 s after a 1 s warm-up measures exactly the 4,000
/// records scheduled in that window, all acknowledged, and consumers see them end to end.
#[test]
fn a_fixed_rate_run_against_the_broker_measures_the_scheduled_records() {
    let broker_binary =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/broker");
    assert!(
        broker_binary.exists(),
        "build the workspace first: {}",
        broker_binary.display()
    );
    let scratch = tempfile::tempdir().unwrap();
    let mut broker = Command::new(&broker_binary)
        .args([
            "start",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "",
            "--data-dir",
        ])
        .arg(scratch.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let bootstrap = BufReader::new(broker.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("bootstrap ").map(str::to_string))
        .expect("broker prints its bootstrap address");
    let json = scratch.path().join("summary.json");
    let hdr = scratch.path().join("latency.hdr");
    let plot = scratch.path().join("latency.svg");
    let (code, text) = loadgen(&[
        "--bootstrap",
        &bootstrap,
        "--topic",
        "fixed",
        "--partitions",
        "3",
        "--rate",
        "2000",
        "--duration",
        "2",
        "--warmup",
        "1",
        "--record-size",
        "256",
        "--keys",
        "uniform:100",
        "--json",
        json.to_str().unwrap(),
        "--consumers",
        "2",
        "--hdr",
        hdr.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    broker.kill().ok();
    broker.wait().ok();
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("produce latency (open-loop)"), "{text}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(summary["records"], 4000, "{summary}");
    assert_eq!(summary["bytes"], 4000 * 256);
    assert_eq!(summary["produce_latency"]["count"], 4000);
    assert!(summary["produce_latency"]["p50_us"].as_u64().unwrap() > 0);
    assert!(summary["facts"]["kernel"]
        .as_str()
        .is_some_and(|kernel| !kernel.is_empty()));
    assert!(
        summary["facts"]["durability"]["mode"]
            .as_str()
            .is_some_and(|mode| mode.starts_with("durable")),
        "{summary}"
    );
    // Consumers saw the measured records (stamped at creation, so a record or two either side).
    let seen = summary["end_to_end_latency"]["count"].as_u64().unwrap_or(0);
    assert!(
        (3980..=4020).contains(&seen),
        "end-to-end count {seen}: {summary}"
    );
    let distribution = std::fs::read_to_string(&hdr).unwrap();
    assert!(distribution.contains("# produce latency"), "{distribution}");
    assert!(
        distribution.contains("# end-to-end latency"),
        "{distribution}"
    );
    assert!(distribution.contains("1/(1-Percentile)"));
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.matches("<polyline").count() == 2,
        "{svg}"
    );
}
