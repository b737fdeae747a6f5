//! tuning: host tuning profiles for the broker, and the preflight checks `broker start` runs.
//!
//! `check` reads the host and reports every knob of a profile (current, wanted, status,
//! severity) plus the preflight checks; `apply` saves every value it will change to a snapshot
//! file first, writes the wanted values, and checks again; `revert` restores the last snapshot.
//! Everything goes through a root directory (`--root`), so tests run on a fake sysfs/procfs
//! tree and never touch the host. Knobs a host cannot change (no such file in a VM, no
//! permission) are reported, never fatal to `apply`.

pub mod knobs;
pub mod preflight;
pub mod profile;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use knobs::{evaluate, knob_spec, Change, HostContext, Row};
use profile::Profile;

/// Every knob of `profile`, evaluated on the host: the report rows and the writes `apply` would
/// make.
pub fn plan(profile: &Profile, host: &HostContext) -> (Vec<Row>, Vec<Change>) {
    let mut rows = Vec::new();
    let mut changes = Vec::new();
    for (id, setting) in &profile.knobs {
        // Profiles are validated on load, so every id names a known knob.
        let Some(spec) = knob_spec(id) else { continue };
        let (row, knob_changes) = evaluate(spec, setting, host);
        rows.push(row);
        changes.extend(knob_changes);
    }
    (rows, changes)
}

/// The last `apply`: what it changed, to undo with `revert`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub profile: String,
    pub changes: Vec<Change>,
}

/// Where `apply` keeps its snapshot unless told otherwise.
pub fn default_snapshot_path(root: &Path) -> PathBuf {
    root.join("var/lib/broker-tuning/snapshot.json")
}

/// The outcome of one write.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    pub knob: String,
    pub path: PathBuf,
    pub value: String,
    /// `None` when the write succeeded.
    pub error: Option<String>,
}

fn write_all(writes: impl Iterator<Item = (String, PathBuf, String)>) -> Vec<Written> {
    writes
        .map(|(knob, path, value)| {
            let error = std::fs::write(&path, &value)
                .err()
                .map(|error| error.to_string());
            Written {
                knob,
                path,
                value,
                error,
            }
        })
        .collect()
}

/// Saves the snapshot, then writes every change. A write that fails (no permission, a value the
/// kernel refuses) is reported and the rest go on.
pub fn apply(
    profile: &Profile,
    changes: &[Change],
    snapshot_path: &Path,
) -> Result<Vec<Written>, String> {
    let snapshot = Snapshot {
        profile: profile.name.clone(),
        changes: changes.to_vec(),
    };
    if let Some(parent) = snapshot_path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|error| format!("{}: {error}", parent.display()))?;
    }
    let text = serde_json::to_string_pretty(&snapshot).map_err(|error| error.to_string())?;
    std::fs::write(snapshot_path, text)
        .map_err(|error| format!("{}: {error}", snapshot_path.display()))?;
    Ok(write_all(changes.iter().map(|change| {
        (
            change.knob.clone(),
            change.path.clone(),
            change.after.clone(),
        )
    })))
}

/// Restores every value the last `apply` changed, newest change last undone first.
pub fn revert(snapshot_path: &Path) -> Result<Vec<Written>, String> {
    let text = std::fs::read_to_string(snapshot_path).map_err(|error| {
        format!(
            "no snapshot to revert at {}: {error}",
            snapshot_path.display()
        )
    })?;
    let snapshot: Snapshot = serde_json::from_str(&text)
        .map_err(|error| format!("{}: {error}", snapshot_path.display()))?;
    Ok(write_all(
        snapshot
            .changes
            .into_iter()
            .rev()
            .map(|change| (change.knob, change.path, change.before)),
    ))
}
