//! Preflight checks: what the broker needs from the host before it starts. Shared by
//! `tuning check` and `broker start`, which refuses or warns as its profile says.

use std::path::Path;

use crate::knobs::{Row, Status};
use crate::profile::Severity;

/// io_uring arrived in 5.1; the operations glommio relies on are complete from 5.8.
const KERNEL_MIN: (u32, u32) = (5, 8);
/// glommio refuses to start below this much locked memory.
const LOCKED_MEMORY_MIN_BYTES: u64 = 512 * 1024;
/// Every partition keeps segment and index files open, and every client a socket.
const OPEN_FILES_RECOMMENDED: u64 = 65_536;

fn row(
    check: &str,
    current: String,
    wanted: &str,
    ok: bool,
    severity: Severity,
    note: String,
) -> Row {
    Row {
        knob: check.to_string(),
        current,
        wanted: wanted.to_string(),
        status: if ok { Status::Ok } else { Status::Differs },
        severity,
        note: if ok { String::new() } else { note },
    }
}

fn kernel_release() -> String {
    // SAFETY: utsname is plain data; uname fills the struct we own.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to our struct.
    if unsafe { libc::uname(&mut name) } != 0 {
        return String::new();
    }
    // SAFETY: uname writes NUL-terminated strings into the fixed arrays.
    unsafe { std::ffi::CStr::from_ptr(name.release.as_ptr()) }
        .to_string_lossy()
        .to_string()
}

fn hard_limit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(resource, &mut limit) } != 0 {
        return 0;
    }
    limit.rlim_max
}

fn filesystem_name(magic: i64) -> Option<&'static str> {
    Some(match magic {
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x794C_7630 => "overlayfs",
        0x6969 => "nfs",
        _ => return None,
    })
}

/// Runs every check; `data_dir` (created if missing) is checked for writes and its filesystem.
pub fn preflight(root: &Path, data_dir: Option<&Path>) -> Vec<Row> {
    let mut rows = Vec::new();
    let release = kernel_release();
    let version: Vec<u32> = release
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .filter_map(|part| part.parse().ok())
        .collect();
    let disabled = std::fs::read_to_string(root.join("proc/sys/kernel/io_uring_disabled"))
        .map(|text| text.trim() != "0")
        .unwrap_or(false);
    let new_enough = version.len() == 2 && (version[0], version[1]) >= KERNEL_MIN;
    rows.push(row(
        "kernel.io_uring",
        format!(
            "{release}{}",
            if disabled { " (io_uring disabled)" } else { "" }
        ),
        &format!(">= {}.{} with io_uring enabled", KERNEL_MIN.0, KERNEL_MIN.1),
        new_enough && !disabled,
        Severity::Fatal,
        if disabled {
            "kernel.io_uring_disabled is set".into()
        } else {
            String::new()
        },
    ));
    let memlock = hard_limit(libc::RLIMIT_MEMLOCK);
    rows.push(row(
        "limits.memlock",
        if memlock == libc::RLIM_INFINITY {
            "unlimited".into()
        } else {
            format!("{} KiB", memlock / 1024)
        },
        ">= 512 KiB (hard limit)",
        memlock >= LOCKED_MEMORY_MIN_BYTES,
        Severity::Fatal,
        "raise with `ulimit -l`, LimitMEMLOCK= in a systemd unit, or CAP_IPC_LOCK".into(),
    ));
    let files = hard_limit(libc::RLIMIT_NOFILE);
    rows.push(row(
        "limits.nofile",
        if files == libc::RLIM_INFINITY {
            "unlimited".into()
        } else {
            files.to_string()
        },
        ">= 65536 (hard limit)",
        files >= OPEN_FILES_RECOMMENDED,
        Severity::Warn,
        "raise with `ulimit -n` or LimitNOFILE= in a systemd unit".into(),
    ));
    if let Some(data_dir) = data_dir {
        let probe = data_dir.join(".preflight-probe");
        let writable = std::fs::create_dir_all(data_dir)
            .and_then(|()| std::fs::write(&probe, b"probe"))
            .and_then(|()| std::fs::File::open(&probe)?.sync_all())
            .and_then(|()| std::fs::remove_file(&probe));
        rows.push(row(
            "data_dir.writable",
            match &writable {
                Ok(()) => "writable".into(),
                Err(error) => error.to_string(),
            },
            "writable",
            writable.is_ok(),
            Severity::Fatal,
            data_dir.display().to_string(),
        ));
        let mut stat: libc::statfs = unsafe_zeroed_statfs();
        let path =
            std::ffi::CString::new(data_dir.as_os_str().as_encoded_bytes()).unwrap_or_default();
        // SAFETY: a NUL-terminated path and a pointer to a statfs struct we own.
        let ok = unsafe { libc::statfs(path.as_ptr(), &mut stat) } == 0;
        // f_type is i64 on x86_64 glibc but a narrower type on other targets.
        #[allow(clippy::unnecessary_cast)]
        let magic = stat.f_type as i64;
        let name = if ok {
            filesystem_name(magic).map_or(format!("0x{magic:x}"), str::to_string)
        } else {
            "unknown".into()
        };
        let good = matches!(name.as_str(), "ext4" | "xfs" | "btrfs");
        rows.push(row(
            "data_dir.filesystem",
            name,
            "ext4, xfs or btrfs",
            good,
            Severity::Warn,
            "direct I/O and fdatasync behave as the broker expects on local journaling filesystems"
                .into(),
        ));
    }
    rows
}

fn unsafe_zeroed_statfs() -> libc::statfs {
    // SAFETY: statfs is plain data; all-zero is a valid value that statfs(2) overwrites.
    unsafe { std::mem::zeroed() }
}
