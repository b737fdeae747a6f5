//! `tuning check | apply | revert | profiles`: host tuning for the broker.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tuning::knobs::{format_core_list, parse_core_list, HostContext, Row};
use tuning::profile::{self, Profile};

#[derive(Parser)]
#[command(
    name = "tuning",
    version,
    about = "Check, apply and revert host tuning for the broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read-only report: one row per knob and preflight check; exits 0 when no fatal one fails.
    Check {
        #[command(flatten)]
        common: Common,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// The broker's data directory, checked for writes and its filesystem.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Save every value it will change to a snapshot, apply the profile, then check again.
    Apply {
        #[command(flatten)]
        common: Common,
        /// Show what would change without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Snapshot file [default: ROOT/var/lib/broker-tuning/snapshot.json]
        #[arg(long)]
        snapshot: Option<PathBuf>,
    },
    /// Restore the values the last apply changed.
    Revert {
        /// Root of the sysfs/procfs tree to change (a fake tree in tests).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Snapshot file [default: ROOT/var/lib/broker-tuning/snapshot.json]
        #[arg(long)]
        snapshot: Option<PathBuf>,
    },
    /// List the built-in profiles.
    Profiles,
}

#[derive(Args)]
struct Common {
    /// A built-in profile (dev, production, low-latency) or a profile file.
    #[arg(long, default_value = "production")]
    profile: String,
    /// Root of the sysfs/procfs tree (a fake tree in tests).
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// The broker's cores, overriding the profile's [default: every allowed core]
    #[arg(long)]
    cores: Option<String>,
}

/// The host's online CPUs, from the root's sysfs (the fake one in tests); IRQs may go to any
/// of them that runs no shard.
fn online_cores(root: &std::path::Path) -> Vec<usize> {
    std::fs::read_to_string(root.join("sys/devices/system/cpu/online"))
        .ok()
        .and_then(|text| parse_core_list(&text))
        .filter(|cores| !cores.is_empty())
        .unwrap_or_else(|| {
            let count = std::thread::available_parallelism().map_or(1, |count| count.get());
            (0..count).collect()
        })
}

fn host(common: &Common, profile: &Profile) -> Result<HostContext, String> {
    let all_cores = online_cores(&common.root);
    let broker_cores = match common.cores.as_deref().or(profile.cores.as_deref()) {
        Some(list) => parse_core_list(list)
            .filter(|cores| !cores.is_empty())
            .ok_or_else(|| format!("invalid core list {list:?}: expected something like 0-3,6"))?,
        None => all_cores.clone(),
    };
    Ok(HostContext {
        root: common.root.clone(),
        broker_cores,
        all_cores,
    })
}

fn print_table(rows: &[Row]) {
    let widths = [24, 30, 30, 13, 8];
    println!(
        "{:<24} {:<30} {:<30} {:<13} {:<8} NOTE",
        "KNOB", "CURRENT", "WANTED", "STATUS", "SEVERITY"
    );
    for row in rows {
        let status = serde_json::to_value(&row.status)
            .ok()
            .and_then(|value| value.as_str().map(str::to_string))
            .unwrap_or_default();
        let severity = serde_json::to_value(row.severity)
            .ok()
            .and_then(|value| value.as_str().map(str::to_string))
            .unwrap_or_default();
        println!(
            "{:<w0$} {:<w1$} {:<w2$} {:<w3$} {:<w4$} {}",
            row.knob,
            row.current,
            row.wanted,
            status,
            severity,
            row.note,
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4]
        );
    }
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Profiles => {
            for (name, _) in profile::BUILT_IN {
                let loaded = profile::load(name).map_err(|error| error.to_string())?;
                println!("{name:<12} {}", loaded.description);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            common,
            json,
            data_dir,
        } => {
            let profile = profile::load(&common.profile).map_err(|error| error.to_string())?;
            let host = host(&common, &profile)?;
            let (mut rows, _) = tuning::plan(&profile, &host);
            rows.extend(tuning::preflight::preflight(&common.root, Some(&data_dir)));
            if json {
                let report = serde_json::json!({
                    "profile": profile.name,
                    "broker_cores": format_core_list(&host.broker_cores),
                    "rows": rows,
                });
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).map_err(|error| error.to_string())?
                );
            } else {
                println!(
                    "profile {} ({}), broker cores {}",
                    profile.name,
                    profile.description,
                    format_core_list(&host.broker_cores)
                );
                print_table(&rows);
            }
            Ok(if rows.iter().any(Row::is_fatal_failure) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Apply {
            common,
            dry_run,
            snapshot,
        } => {
            let profile = profile::load(&common.profile).map_err(|error| error.to_string())?;
            let host = host(&common, &profile)?;
            let (rows, changes) = tuning::plan(&profile, &host);
            for row in rows.iter().filter(|row| {
                row.status != tuning::knobs::Status::Ok
                    && row.status != tuning::knobs::Status::Differs
            }) {
                println!("cannot apply {}: {}", row.knob, row.note);
            }
            if dry_run {
                for change in &changes {
                    println!(
                        "would set {} = {} (now {})  [{}]",
                        change.path.display(),
                        change.after,
                        change.before,
                        change.knob
                    );
                }
                println!("{} change(s); nothing was changed (dry run)", changes.len());
                return Ok(ExitCode::SUCCESS);
            }
            let snapshot = snapshot.unwrap_or_else(|| tuning::default_snapshot_path(&common.root));
            let written = tuning::apply(&profile, &changes, &snapshot)?;
            for write in &written {
                match &write.error {
                    None => println!(
                        "set {} = {}  [{}]",
                        write.path.display(),
                        write.value,
                        write.knob
                    ),
                    Some(error) => println!(
                        "could not set {} = {}: {error}  [{}]",
                        write.path.display(),
                        write.value,
                        write.knob
                    ),
                }
            }
            println!(
                "snapshot saved to {}; undo with `tuning revert`",
                snapshot.display()
            );
            let (after, _) = tuning::plan(&profile, &host);
            print_table(&after);
            Ok(ExitCode::SUCCESS)
        }
        Command::Revert { root, snapshot } => {
            let snapshot = snapshot.unwrap_or_else(|| tuning::default_snapshot_path(&root));
            for write in tuning::revert(&snapshot)? {
                match &write.error {
                    None => println!(
                        "restored {} = {}  [{}]",
                        write.path.display(),
                        write.value,
                        write.knob
                    ),
                    Some(error) => println!(
                        "could not restore {} = {}: {error}  [{}]",
                        write.path.display(),
                        write.value,
                        write.knob
                    ),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("tuning: {message}");
            ExitCode::from(2)
        }
    }
}
