//! Choosing the cores shards run on.
//!
//! glommio's own CPU listing ignores the process's affinity mask (taskset, cgroups cpusets), so
//! the mask is read here with `sched_getaffinity` and every plan stays inside it.

use crate::pool::ShardingError;

/// The cores this process may run on, in ascending order.
pub fn allowed_cores() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: we pass the size of the set we own and a valid pointer to it; pid 0 is ourselves.
    let status =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if status != 0 {
        let count = std::thread::available_parallelism().map_or(1, |count| count.get());
        return (0..count).collect();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: index is below CPU_SETSIZE and the set is initialised.
        .filter(|core| unsafe { libc::CPU_ISSET(*core, &set) })
        .collect()
}

/// Parses a core list such as `0-3,6,8-9` into sorted, unique core numbers.
pub fn parse_core_list(text: &str) -> Result<Vec<usize>, ShardingError> {
    let invalid = || ShardingError::InvalidCoreList {
        text: text.to_string(),
    };
    let mut cores = Vec::new();
    for part in text
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
    {
        match part.split_once('-') {
            Some((first, last)) => {
                let first: usize = first.trim().parse().map_err(|_| invalid())?;
                let last: usize = last.trim().parse().map_err(|_| invalid())?;
                if first > last || last >= libc::CPU_SETSIZE as usize {
                    return Err(invalid());
                }
                cores.extend(first..=last);
            }
            None => {
                let core: usize = part.parse().map_err(|_| invalid())?;
                if core >= libc::CPU_SETSIZE as usize {
                    return Err(invalid());
                }
                cores.push(core);
            }
        }
    }
    cores.sort_unstable();
    cores.dedup();
    if cores.is_empty() {
        return Err(invalid());
    }
    Ok(cores)
}

/// The cores to run shards on: `requested` (a core list) if given, else every allowed core.
/// Requested cores outside the affinity mask are an error, not silently dropped.
pub fn plan_cores(requested: Option<&str>) -> Result<Vec<usize>, ShardingError> {
    let allowed = allowed_cores();
    let Some(requested) = requested else {
        return Ok(allowed);
    };
    let cores = parse_core_list(requested)?;
    let outside: Vec<usize> = cores
        .iter()
        .copied()
        .filter(|core| !allowed.contains(core))
        .collect();
    if !outside.is_empty() {
        return Err(ShardingError::CoresNotAllowed { outside, allowed });
    }
    Ok(cores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_lists_parse_ranges_and_singles() {
        assert_eq!(parse_core_list("0-3,6").unwrap(), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_core_list(" 2 , 1,1 ").unwrap(), vec![1, 2]);
        assert!(parse_core_list("3-1").is_err());
        assert!(parse_core_list("a").is_err());
        assert!(parse_core_list("").is_err());
        assert!(parse_core_list("99999").is_err());
    }

    #[test]
    fn the_default_plan_is_the_affinity_mask() {
        let allowed = allowed_cores();
        assert!(!allowed.is_empty());
        assert_eq!(plan_cores(None).unwrap(), allowed);
        assert!(plan_cores(Some("1000")).is_err());
    }
}
