//! What a process group uses, read from `/proc` (Linux): the processes in it and their
//! resident memory. `max_processes` and `max_memory` of script jobs are checked with it
//! (`exec.rs`), every job from one shared reading per poll; without `/proc` (another system) a group uses nothing, and those limits
//! are not enforced.

use std::collections::HashMap;
use std::fs;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A process group's use at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub processes: usize,
    /// Resident memory of every process of the group, in bytes.
    pub memory: u64,
}

/// Assumed when the page size cannot be known: Linux on x86-64 and most arm64 kernels.
const PAGE_SIZE: u64 = 4096;

/// The last reading of every group, shared by every caller: one scan of `/proc` serves
/// all the jobs with limits that ask within `max_age` of it.
static SNAPSHOT: Mutex<Option<(Instant, HashMap<i32, Usage>)>> = Mutex::new(None);

/// The processes of group `pgid` and their resident memory, from a reading at most
/// `max_age` old. Processes that end while they are read are skipped; zombies count as
/// processes with no memory.
pub fn group_usage(pgid: i32, max_age: Duration) -> Usage {
    let mut snapshot = SNAPSHOT.lock().unwrap_or_else(|e| e.into_inner());
    let fresh = snapshot
        .as_ref()
        .is_some_and(|(at, _)| at.elapsed() <= max_age);
    if !fresh {
        *snapshot = Some((Instant::now(), scan()));
    }
    snapshot
        .as_ref()
        .and_then(|(_, groups)| groups.get(&pgid).copied())
        .unwrap_or_default()
}

/// Every process group's use now.
fn scan() -> HashMap<i32, Usage> {
    let mut groups: HashMap<i32, Usage> = HashMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return groups;
    };
    let page = page_size();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((group, rss_pages)) = parse_stat(&stat) {
            let usage = groups.entry(group).or_default();
            usage.processes += 1;
            usage.memory += rss_pages * page;
        }
    }
    groups
}

/// The process group and resident pages of a `/proc/PID/stat` line. The command name (in
/// parentheses) may hold spaces and parentheses, so fields are counted after the last `)`.
fn parse_stat(stat: &str) -> Option<(i32, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) pgrp(5) … rss(24), numbered as in proc(5).
    let group = fields.get(2)?.parse().ok()?;
    let rss = fields.get(21)?.parse().ok()?;
    Some((group, rss))
}

fn page_size() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(size)) if size > 0 => size as u64,
        _ => PAGE_SIZE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_with_spaces_and_parentheses_is_skipped() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    100 2000000 321 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((4242, 321)));
    }

    #[test]
    fn this_process_group_is_seen_with_its_memory() {
        let group = nix::unistd::getpgrp().as_raw();
        let usage = group_usage(group, Duration::ZERO);
        assert!(usage.processes >= 1, "{usage:?}");
        assert!(usage.memory > 1024 * 1024, "{usage:?}");
    }
}
