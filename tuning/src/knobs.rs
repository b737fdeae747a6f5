//! The knobs: where each lives in sysfs/procfs, how its current value compares with the wanted
//! one, and how to change it. Every path is taken under a root directory (`/` on a real host, a
//! fake tree in tests), so the logic is tested without touching the host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::profile::{KnobSetting, Severity};

/// How a current value satisfies the wanted one.
#[derive(Debug, Clone, Copy)]
enum Compare {
    Exact,
    /// A number at least as large as wanted.
    AtLeast,
    /// A sysfs choice file such as `[mq-deadline] none`: the bracketed entry is the current one.
    Choice,
}

#[derive(Debug, Clone, Copy)]
enum Access {
    /// One or more files under the root; `*` in a component matches any name with that prefix
    /// and suffix, `#` matches decimal digits (`cpu#` is `cpu0`, `cpu1`, ...).
    Files(&'static str, Compare),
    /// Every IRQ's `smp_affinity_list`, wanted on the cores that run no shard.
    IrqAffinity,
    /// C-states deeper than C1 disabled on every CPU.
    CpuIdle,
    /// A kernel command-line parameter set to the broker's cores: needs a reboot to change.
    BootParameter(&'static str),
}

#[derive(Debug)]
pub struct KnobSpec {
    pub id: &'static str,
    pub description: &'static str,
    access: Access,
}

pub const KNOBS: &[KnobSpec] = &[
    KnobSpec {
        id: "disk.scheduler",
        description: "I/O scheduler of every block device (none: NVMe needs no reordering)",
        access: Access::Files("sys/block/*/queue/scheduler", Compare::Choice),
    },
    KnobSpec {
        id: "disk.nomerges",
        description: "request merging off (2), saving CPU on fast disks",
        access: Access::Files("sys/block/*/queue/nomerges", Compare::Exact),
    },
    KnobSpec {
        id: "irq.affinity",
        description: "interrupts handled on cores that run no shard",
        access: Access::IrqAffinity,
    },
    KnobSpec {
        id: "cpu.governor",
        description: "CPU frequency governor",
        access: Access::Files(
            "sys/devices/system/cpu/cpu#/cpufreq/scaling_governor",
            Compare::Exact,
        ),
    },
    KnobSpec {
        id: "fs.aio-max-nr",
        description: "system-wide limit of asynchronous I/O requests",
        access: Access::Files("proc/sys/fs/aio-max-nr", Compare::AtLeast),
    },
    KnobSpec {
        id: "vm.swappiness",
        description: "how eagerly the kernel swaps",
        access: Access::Files("proc/sys/vm/swappiness", Compare::Exact),
    },
    KnobSpec {
        id: "clocksource",
        description: "kernel clock source (tsc is the cheapest to read)",
        access: Access::Files(
            "sys/devices/system/clocksource/clocksource0/current_clocksource",
            Compare::Exact,
        ),
    },
    KnobSpec {
        id: "transparent-hugepages",
        description: "transparent huge pages mode",
        access: Access::Files(
            "sys/kernel/mm/transparent_hugepage/enabled",
            Compare::Choice,
        ),
    },
    KnobSpec {
        id: "net.core.somaxconn",
        description: "listen backlog limit",
        access: Access::Files("proc/sys/net/core/somaxconn", Compare::AtLeast),
    },
    KnobSpec {
        id: "cpu.idle-states",
        description: "C-states deeper than C1 disabled (wake-up latency)",
        access: Access::CpuIdle,
    },
    KnobSpec {
        id: "net.core.busy_poll",
        description: "busy polling of sockets in poll/select, microseconds",
        access: Access::Files("proc/sys/net/core/busy_poll", Compare::AtLeast),
    },
    KnobSpec {
        id: "net.core.busy_read",
        description: "busy polling of socket reads, microseconds",
        access: Access::Files("proc/sys/net/core/busy_read", Compare::AtLeast),
    },
    KnobSpec {
        id: "kernel.timer_migration",
        description: "timers kept on the core that armed them",
        access: Access::Files("proc/sys/kernel/timer_migration", Compare::Exact),
    },
    KnobSpec {
        id: "boot.isolcpus",
        description: "broker cores isolated from the scheduler (boot line)",
        access: Access::BootParameter("isolcpus"),
    },
    KnobSpec {
        id: "boot.nohz_full",
        description: "no scheduler tick on broker cores (boot line)",
        access: Access::BootParameter("nohz_full"),
    },
];

pub fn knob_spec(id: &str) -> Option<&'static KnobSpec> {
    KNOBS.iter().find(|spec| spec.id == id)
}

impl KnobSpec {
    /// Refuses wanted values that can never be right for this knob.
    pub fn validate_want(&self, want: &str) -> Result<(), String> {
        match self.access {
            Access::Files(_, Compare::AtLeast) => want
                .parse::<u64>()
                .map(|_| ())
                .map_err(|_| format!("{want:?} is not a number")),
            Access::Files(_, Compare::Exact)
                if self.id == "vm.swappiness" || self.id == "disk.nomerges" =>
            {
                want.parse::<u64>()
                    .map(|_| ())
                    .map_err(|_| format!("{want:?} is not a number"))
            }
            Access::IrqAffinity if want != "away-from-broker-cores" => {
                Err("the only setting is away-from-broker-cores".into())
            }
            Access::CpuIdle if want != "shallow-only" => {
                Err("the only setting is shallow-only".into())
            }
            Access::BootParameter(_) if want != "broker-cores" => {
                Err("the only setting is broker-cores".into())
            }
            _ => Ok(()),
        }
    }
}

/// What the knobs are evaluated against.
#[derive(Debug, Clone)]
pub struct HostContext {
    pub root: PathBuf,
    pub broker_cores: Vec<usize>,
    pub all_cores: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Ok,
    Differs,
    NeedsReboot,
    Unavailable,
}

/// One line of a check report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub knob: String,
    pub current: String,
    pub wanted: String,
    pub status: Status,
    pub severity: Severity,
    /// Why the knob is unavailable or what is wrong, when something is.
    pub note: String,
}

impl Row {
    /// A row that counts against `check`'s exit code.
    pub fn is_fatal_failure(&self) -> bool {
        self.severity == Severity::Fatal && self.status != Status::Ok
    }
}

/// One file write `apply` makes, with the value to restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Change {
    pub knob: String,
    pub path: PathBuf,
    pub before: String,
    pub after: String,
}

/// Formats cores as a kernel core list: `0-3,6`.
pub fn format_core_list(cores: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut index = 0;
    while index < cores.len() {
        let start = cores[index];
        let mut end = start;
        while index + 1 < cores.len() && cores[index + 1] == end + 1 {
            index += 1;
            end = cores[index];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        index += 1;
    }
    parts.join(",")
}

/// Parses a kernel core list (`0-3,6`), sorted and without repeats; `None` if malformed.
pub fn parse_core_list(text: &str) -> Option<Vec<usize>> {
    let mut cores = Vec::new();
    for part in text
        .trim()
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
    {
        match part.split_once('-') {
            Some((first, last)) => cores
                .extend(first.trim().parse::<usize>().ok()?..=last.trim().parse::<usize>().ok()?),
            None => cores.push(part.parse().ok()?),
        }
    }
    cores.sort_unstable();
    cores.dedup();
    Some(cores)
}

fn component_matches(pattern: &str, name: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix('#') {
        return name.strip_prefix(prefix).is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|byte| byte.is_ascii_digit())
        });
    }
    match pattern.split_once('*') {
        Some((prefix, suffix)) => {
            name.starts_with(prefix)
                && name.ends_with(suffix)
                && name.len() >= prefix.len() + suffix.len()
        }
        None => pattern == name,
    }
}

/// Expands a pattern of `Access::Files` under `root`, sorted.
fn expand(root: &Path, pattern: &str) -> Vec<PathBuf> {
    let mut paths = vec![root.to_path_buf()];
    for component in pattern.split('/') {
        let mut next = Vec::new();
        for path in &paths {
            if !component.contains(['*', '#']) {
                let candidate = path.join(component);
                if candidate.exists() {
                    next.push(candidate);
                }
                continue;
            }
            let Ok(entries) = std::fs::read_dir(path) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                // Loop and RAM disks are not where a broker keeps data.
                let virtual_disk = component == "*"
                    && path.ends_with("block")
                    && (name.starts_with("loop")
                        || name.starts_with("ram")
                        || name.starts_with("zram"));
                if component_matches(component, &name) && !virtual_disk {
                    next.push(entry.path());
                }
            }
        }
        paths = next;
    }
    paths.sort();
    paths
}

fn read_value(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_string())
}

/// The selected entry of a sysfs choice file (`[mq-deadline] none` is `mq-deadline`).
fn selected_choice(content: &str) -> Option<&str> {
    content
        .split_whitespace()
        .find_map(|word| word.strip_prefix('[')?.strip_suffix(']'))
}

fn summarize(values: &[String]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for value in values {
        *counts.entry(value).or_default() += 1;
    }
    if counts.len() == 1 {
        return values[0].clone();
    }
    counts
        .iter()
        .map(|(value, count)| format!("{value} ({count})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Evaluates one knob: its report row, and the writes that would bring it to the wanted value.
pub fn evaluate(spec: &KnobSpec, setting: &KnobSetting, host: &HostContext) -> (Row, Vec<Change>) {
    let mut row = Row {
        knob: spec.id.to_string(),
        current: String::new(),
        wanted: setting.want.clone(),
        status: Status::Ok,
        severity: setting.severity,
        note: String::new(),
    };
    let unavailable = |mut row: Row, note: String| {
        row.status = Status::Unavailable;
        row.current = "-".into();
        row.note = note;
        (row, Vec::new())
    };
    match spec.access {
        Access::Files(pattern, compare) => {
            let paths = expand(&host.root, pattern);
            if paths.is_empty() {
                return unavailable(row, format!("no {pattern} on this host"));
            }
            let mut currents = Vec::new();
            let mut changes = Vec::new();
            for path in paths {
                let Some(content) = read_value(&path) else {
                    return unavailable(row, format!("cannot read {}", path.display()));
                };
                let (current, satisfied) = match compare {
                    Compare::Exact => (content.clone(), content == setting.want),
                    Compare::AtLeast => {
                        let number = content.parse::<u64>().ok();
                        let wanted = setting.want.parse::<u64>().unwrap_or(u64::MAX);
                        (
                            content.clone(),
                            number.is_some_and(|number| number >= wanted),
                        )
                    }
                    Compare::Choice => {
                        let selected = selected_choice(&content).unwrap_or(&content).to_string();
                        let offered = content.split_whitespace().any(|word| {
                            word.trim_matches(|c| c == '[' || c == ']') == setting.want
                        });
                        if !offered {
                            return unavailable(
                                row,
                                format!(
                                    "{} does not offer {:?} ({content})",
                                    path.display(),
                                    setting.want
                                ),
                            );
                        }
                        let satisfied = selected == setting.want;
                        (selected, satisfied)
                    }
                };
                if !satisfied {
                    changes.push(Change {
                        knob: spec.id.to_string(),
                        path: path.clone(),
                        before: current.clone(),
                        after: setting.want.clone(),
                    });
                }
                currents.push(current);
            }
            row.current = summarize(&currents);
            if !changes.is_empty() {
                row.status = Status::Differs;
            }
            (row, changes)
        }
        Access::IrqAffinity => {
            let housekeeping: Vec<usize> = host
                .all_cores
                .iter()
                .copied()
                .filter(|core| !host.broker_cores.contains(core))
                .collect();
            row.wanted = if housekeeping.is_empty() {
                "-".into()
            } else {
                format_core_list(&housekeeping)
            };
            if housekeeping.is_empty() {
                return unavailable(
                    row,
                    "every core runs a shard; no core is left for interrupts".into(),
                );
            }
            let paths = expand(&host.root, "proc/irq/#/smp_affinity_list");
            if paths.is_empty() {
                return unavailable(row, "no /proc/irq on this host".into());
            }
            let wanted = format_core_list(&housekeeping);
            let mut on_broker_cores = 0;
            let mut changes = Vec::new();
            for path in &paths {
                let Some(current) = read_value(path) else {
                    continue;
                };
                let cores = parse_core_list(&current).unwrap_or_default();
                if cores.iter().any(|core| host.broker_cores.contains(core)) {
                    on_broker_cores += 1;
                    changes.push(Change {
                        knob: spec.id.to_string(),
                        path: path.clone(),
                        before: current,
                        after: wanted.clone(),
                    });
                }
            }
            row.current = format!("{on_broker_cores} of {} IRQs on broker cores", paths.len());
            if on_broker_cores > 0 {
                row.status = Status::Differs;
            }
            (row, changes)
        }
        Access::CpuIdle => {
            let paths: Vec<PathBuf> = expand(
                &host.root,
                "sys/devices/system/cpu/cpu#/cpuidle/state#/disable",
            )
            .into_iter()
            .filter(|path| {
                // POLL (state0) and C1 (state1) stay enabled; deeper states are disabled.
                path.parent()
                    .and_then(|state| state.file_name())
                    .and_then(|name| name.to_str()?.strip_prefix("state")?.parse::<u32>().ok())
                    .is_some_and(|index| index >= 2)
            })
            .collect();
            if paths.is_empty() {
                return unavailable(
                    row,
                    "no C-states deeper than C1 (a VM, or cpuidle is off)".into(),
                );
            }
            let mut changes = Vec::new();
            for path in &paths {
                let current = read_value(path).unwrap_or_default();
                if current != "1" {
                    changes.push(Change {
                        knob: spec.id.to_string(),
                        path: path.clone(),
                        before: current,
                        after: "1".into(),
                    });
                }
            }
            row.current = format!("{} of {} deep states enabled", changes.len(), paths.len());
            if !changes.is_empty() {
                row.status = Status::Differs;
            }
            (row, changes)
        }
        Access::BootParameter(parameter) => {
            let wanted = format_core_list(&host.broker_cores);
            row.wanted = format!("{parameter}={wanted}");
            let Some(cmdline) = read_value(&host.root.join("proc/cmdline")) else {
                return unavailable(row, "cannot read /proc/cmdline".into());
            };
            let current = cmdline
                .split_whitespace()
                .find_map(|word| word.strip_prefix(&format!("{parameter}=")))
                .map(str::to_string);
            row.current = current
                .clone()
                .map_or("(unset)".into(), |value| format!("{parameter}={value}"));
            if current.and_then(|value| parse_core_list(&value)) != Some(host.broker_cores.clone())
            {
                row.status = Status::NeedsReboot;
                row.note =
                    format!("add {parameter}={wanted} to the kernel command line and reboot");
            }
            (row, Vec::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_lists_format_as_the_kernel_writes_them() {
        assert_eq!(format_core_list(&[0, 1, 2, 3, 6, 8, 9]), "0-3,6,8-9");
        assert_eq!(parse_core_list("0-2,5"), Some(vec![0, 1, 2, 5]));
        assert_eq!(
            selected_choice("[mq-deadline] kyber none"),
            Some("mq-deadline")
        );
    }

    #[test]
    fn globs_match_prefixes_and_digit_runs() {
        assert!(component_matches("cpu#", "cpu12"));
        assert!(!component_matches("cpu#", "cpufreq"));
        assert!(component_matches("*", "nvme0n1"));
        assert!(component_matches("state#", "state3"));
    }
}
