//! kcat (Debian's, built on librdkafka 2.0.2) works as the README shows: -L, -P, -C.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

fn kcat(broker: &Broker, args: &[&str], input: Option<&str>) -> String {
    let mut child = Command::new("kcat")
        .arg("-b")
        .arg(&broker.bootstrap)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is installed (.ci/run installs it)");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "kcat {args:?} failed: {stderr}");
    assert!(!stderr.contains("ERROR"), "kcat {args:?}: {stderr}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn kcat_lists_produces_and_consumes_as_the_readme_shows() {
    let scratch = scratch_dir();
    let broker = Broker::start(&scratch.path().join("data"), &[]);

    kcat(
        &broker,
        &["-t", "greetings", "-P", "-K:"],
        Some("k1:hello\nk2:world\n"),
    );
    let consumed = kcat(&broker, &["-t", "greetings", "-C", "-e", "-K:"], None);
    assert_eq!(consumed, "k1:hello\nk2:world\n");

    let listing = kcat(&broker, &["-L"], None);
    assert!(
        listing.contains(&format!("{} brokers:", broker.shard_addresses.len())),
        "{listing}"
    );
    assert!(
        listing.contains("topic \"greetings\" with 1 partitions"),
        "{listing}"
    );

    let formatted = kcat(
        &broker,
        &[
            "-t",
            "greetings",
            "-C",
            "-e",
            "-o",
            "1",
            "-f",
            "%p %o %k %s\n",
        ],
        None,
    );
    assert_eq!(formatted, "0 1 k2 world\n");
}
