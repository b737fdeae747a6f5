//! The `tuning` binary: a read-only check of this machine, and apply/revert on a fake
//! sysfs/procfs tree so the host is never touched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn tuning(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tuning"))
        .args(args)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

/// `check` on the real host reads every knob of the profile and every preflight check, and
/// its exit code is 1 exactly when a fatal row fails.
#[test]
fn check_reports_every_knob_of_this_machine_with_the_right_exit_code() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().display().to_string();
    let (code, text) = tuning(&[
        "check",
        "--profile",
        "low-latency",
        "--json",
        "--data-dir",
        &data_dir,
    ]);
    let report: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text}"));
    let rows = report["rows"].as_array().unwrap();
    let knobs: Vec<&str> = rows
        .iter()
        .map(|row| row["knob"].as_str().unwrap())
        .collect();
    for expected in [
        "disk.scheduler",
        "vm.swappiness",
        "irq.affinity",
        "boot.nohz_full",
        "kernel.io_uring",
        "limits.memlock",
        "data_dir.writable",
    ] {
        assert!(knobs.contains(&expected), "{expected} missing: {knobs:?}");
    }
    for row in rows {
        for field in ["current", "wanted", "status", "severity"] {
            assert!(row.get(field).is_some(), "{row} lacks {field}");
        }
    }
    let fatal_failures = rows
        .iter()
        .filter(|row| row["severity"] == "fatal" && row["status"] != "ok")
        .count();
    assert_eq!(code, if fatal_failures > 0 { 1 } else { 0 }, "{text}");

    let (code, table) = tuning(&["check", "--data-dir", &data_dir]);
    assert!(
        table.contains("KNOB") && table.contains("disk.scheduler"),
        "{table}"
    );
    assert!(code == 0 || code == 1);
}

/// A fake host: file path (under the root) and content.
const FAKE_HOST: &[(&str, &str)] = &[
    ("sys/block/vda/queue/scheduler", "[mq-deadline] none"),
    ("sys/block/vda/queue/nomerges", "0"),
    ("sys/block/loop0/queue/scheduler", "[none]"),
    (
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
        "powersave",
    ),
    (
        "sys/devices/system/cpu/cpu1/cpufreq/scaling_governor",
        "powersave",
    ),
    ("sys/devices/system/cpu/cpu0/cpuidle/state0/disable", "0"),
    ("sys/devices/system/cpu/cpu0/cpuidle/state1/disable", "0"),
    ("sys/devices/system/cpu/cpu0/cpuidle/state2/disable", "0"),
    ("sys/devices/system/cpu/cpu0/cpuidle/state3/disable", "0"),
    (
        "sys/devices/system/clocksource/clocksource0/current_clocksource",
        "tsc",
    ),
    (
        "sys/kernel/mm/transparent_hugepage/enabled",
        "[always] madvise never",
    ),
    ("proc/sys/fs/aio-max-nr", "65536"),
    ("proc/sys/vm/swappiness", "60"),
    ("proc/sys/net/core/somaxconn", "128"),
    ("proc/sys/net/core/busy_poll", "0"),
    ("proc/sys/net/core/busy_read", "0"),
    ("proc/sys/kernel/timer_migration", "1"),
    ("proc/irq/24/smp_affinity_list", "0-3"),
    ("proc/irq/25/smp_affinity_list", "0"),
    ("proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/vda quiet"),
    ("sys/devices/system/cpu/online", "0-3"),
];

fn build_fake_host(root: &Path) {
    for (path, content) in FAKE_HOST {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("{content}\n")).unwrap();
    }
}

fn tree(root: &Path) -> BTreeMap<String, String> {
    FAKE_HOST
        .iter()
        .map(|(path, _)| {
            (
                path.to_string(),
                std::fs::read_to_string(root.join(path))
                    .unwrap()
                    .trim()
                    .to_string(),
            )
        })
        .collect()
}

/// The value a sysfs choice file selects (`[a] b` selects a; a plain `a` after a write too).
fn selected(value: &str) -> String {
    value
        .split_whitespace()
        .find_map(|word| word.strip_prefix('[')?.strip_suffix(']'))
        .unwrap_or(value)
        .to_string()
}

#[test]
fn dry_run_changes_nothing_and_apply_then_revert_round_trips() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("host");
    build_fake_host(&root);
    let root_arg = root.display().to_string();
    let before = tree(&root);
    let common = [
        "--profile",
        "low-latency",
        "--root",
        root_arg.as_str(),
        "--cores",
        "2-3",
    ];

    let (code, text) = tuning(&[&["apply", "--dry-run"][..], &common].concat());
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("would set"), "{text}");
    assert_eq!(tree(&root), before, "a dry run changed the host");
    assert!(!root.join("var/lib/broker-tuning/snapshot.json").exists());

    let (code, text) = tuning(&[&["apply"][..], &common].concat());
    assert_eq!(code, 0, "{text}");
    let applied = tree(&root);
    assert_eq!(applied["sys/block/vda/queue/scheduler"], "none");
    assert_eq!(applied["sys/block/vda/queue/nomerges"], "2");
    assert_eq!(
        applied["sys/devices/system/cpu/cpu1/cpufreq/scaling_governor"],
        "performance"
    );
    assert_eq!(applied["proc/sys/vm/swappiness"], "1");
    assert_eq!(applied["proc/sys/fs/aio-max-nr"], "1048576");
    assert_eq!(applied["proc/sys/net/core/somaxconn"], "4096");
    assert_eq!(
        applied["sys/kernel/mm/transparent_hugepage/enabled"],
        "madvise"
    );
    assert_eq!(
        applied["proc/irq/24/smp_affinity_list"], "0-1",
        "IRQs move off cores 2-3"
    );
    assert_eq!(
        applied["proc/irq/25/smp_affinity_list"], "0",
        "already off the broker cores"
    );
    assert_eq!(
        applied["sys/devices/system/cpu/cpu0/cpuidle/state1/disable"], "0",
        "C1 stays"
    );
    assert_eq!(
        applied["sys/devices/system/cpu/cpu0/cpuidle/state2/disable"],
        "1"
    );
    assert_eq!(
        applied["sys/block/loop0/queue/scheduler"], "[none]",
        "loop devices untouched"
    );
    assert_eq!(
        applied["proc/cmdline"], before["proc/cmdline"],
        "boot line is never written"
    );
    assert!(text.contains("needs-reboot"), "{text}");

    let (_, report) = tuning(&[&["check", "--json"][..], &common].concat());
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    for row in report["rows"].as_array().unwrap() {
        let knob = row["knob"].as_str().unwrap();
        if !knob.starts_with("boot.")
            && !knob.starts_with("limits.")
            && !knob.starts_with("data_dir.")
            && knob != "kernel.io_uring"
        {
            assert_eq!(row["status"], "ok", "{row}");
        }
    }

    let (code, text) = tuning(&["revert", "--root", &root_arg]);
    assert_eq!(code, 0, "{text}");
    let reverted = tree(&root);
    for (path, original) in &before {
        assert_eq!(
            selected(&reverted[path]),
            selected(original),
            "{path} not restored"
        );
    }
}

#[test]
fn revert_without_a_snapshot_and_unknown_profiles_fail_clearly() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().display().to_string();
    let (code, text) = tuning(&["revert", "--root", &root]);
    assert_eq!(code, 2);
    assert!(text.contains("no snapshot"), "{text}");
    let (code, text) = tuning(&["check", "--profile", "turbo", "--root", &root]);
    assert_eq!(code, 2);
    assert!(text.contains("no profile \"turbo\""), "{text}");
}
