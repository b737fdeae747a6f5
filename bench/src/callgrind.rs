//! Valgrind client requests for callgrind: zero the counters, dump them under a name, and
//! toggle counting, so that `cpu-cost` counts exactly its measured phases.
//!
//! Written by hand because the crate for this (`crabgrind`) generates its bindings from
//! valgrind's C headers with bindgen, which needs libclang at build time; a client request is
//! one documented instruction sequence (`valgrind.h`, `VALGRIND_DO_CLIENT_REQUEST_EXPR` for
//! amd64). Outside valgrind the sequence does nothing and every request returns its default.

use std::ffi::CStr;

/// `VG_USERREQ_TOOL_BASE('C', 'T')` and the callgrind requests after it (`callgrind.h`).
const CALLGRIND_BASE: u64 = (b'C' as u64) << 24 | (b'T' as u64) << 16;
const ZERO_STATS: u64 = CALLGRIND_BASE + 1;
const TOGGLE_COLLECT: u64 = CALLGRIND_BASE + 2;
const DUMP_STATS_AT: u64 = CALLGRIND_BASE + 3;
/// `VG_USERREQ__RUNNING_ON_VALGRIND` (`valgrind.h`).
const RUNNING_ON_VALGRIND: u64 = 0x1001;

#[cfg(target_arch = "x86_64")]
fn client_request(default: u64, request: u64, argument: u64) -> u64 {
    let arguments: [u64; 6] = [request, argument, 0, 0, 0, 0];
    let result: u64;
    // SAFETY: the four rotations of rdi add up to 128 bits, a full turn, so rdi is unchanged,
    // and `xchg rbx, rbx` exchanges a register with itself: on a real CPU the sequence changes
    // no register and no memory (the flags the rotations touch are declared clobbered by
    // default). Under valgrind it is the client-request marker: valgrind reads the six words at
    // rax, which point to `arguments`, alive on this stack frame for the whole sequence, and
    // writes its answer to rdx; the only pointer argument any caller passes is a NUL-terminated
    // string that outlives the call (`dump_stats_at`).
    unsafe {
        std::arch::asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            in("rax") arguments.as_ptr(),
            inout("rdx") default => result,
            out("rdi") _,
            options(nostack),
        );
    }
    result
}

#[cfg(not(target_arch = "x86_64"))]
fn client_request(default: u64, _request: u64, _argument: u64) -> u64 {
    default
}

/// Whether this process runs under valgrind (and so, for `cpu-cost`, under callgrind).
pub fn running_on_valgrind() -> bool {
    client_request(0, RUNNING_ON_VALGRIND, 0) != 0
}

/// Sets every counter back to zero.
pub fn zero_stats() {
    client_request(0, ZERO_STATS, 0);
}

/// Writes the counters since the last zero to a new profile file, named by `reason` inside it.
pub fn dump_stats_at(reason: &CStr) {
    client_request(0, DUMP_STATS_AT, reason.as_ptr() as u64);
}

/// Stops counting if it is on, starts it if it is off.
pub fn toggle_collect() {
    client_request(0, TOGGLE_COLLECT, 0);
}
