//! The server's own figures, from `/proc`: resident memory and CPU time of a
//! process and its children, CPU time of every process of one name (the
//! database's), and the whole machine's busy time.

use super::Result;

/// Clock ticks per second in `/proc`; 100 on Linux for every architecture
/// we run on.
const TICKS: f64 = 100.0;

/// `pid` and every process whose parent it is (nginx's workers).
pub fn family(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            // The command name may hold spaces; fields after ") " are fixed.
            let parent = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split(' ').nth(1))
                .and_then(|ppid| ppid.parse::<u32>().ok());
            if parent == Some(pid) {
                pids.push(child);
            }
        }
    }
    pids
}

/// A `kB` field of a `/proc` file, summed over the family.
fn kib_field(pids: &[u32], file: &str, field: &str) -> Result<u64> {
    let mut total = 0;
    for pid in pids {
        let text = std::fs::read_to_string(format!("/proc/{pid}/{file}"))?;
        let line = text
            .lines()
            .find(|line| line.starts_with(field))
            .ok_or_else(|| format!("no {field} in /proc/{pid}/{file}"))?;
        total += line
            .split_whitespace()
            .nth(1)
            .ok_or("malformed line")?
            .parse::<u64>()?;
    }
    Ok(total)
}

/// Resident memory, in bytes: RSS as `/proc/PID/status` reports it, and PSS,
/// which splits pages shared between processes (nginx's master and workers)
/// fairly instead of counting them once per process.
#[derive(Clone, Copy)]
pub struct Memory {
    pub rss: u64,
    pub pss: u64,
}

pub fn memory(pid: u32) -> Result<Memory> {
    let pids = family(pid);
    Ok(Memory {
        rss: kib_field(&pids, "status", "VmRSS:")? * 1024,
        pss: kib_field(&pids, "smaps_rollup", "Pss:")? * 1024,
    })
}

/// CPU seconds of the family since each process started: (user, system).
pub fn cpu_seconds(pid: u32) -> Result<(f64, f64)> {
    let (mut user, mut system) = (0u64, 0u64);
    for pid in family(pid) {
        let (u, s) = stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat"))?)?;
        user += u;
        system += s;
    }
    Ok((user as f64 / TICKS, system as f64 / TICKS))
}

/// User and system time of one process from its `stat` line, in ticks.
fn stat_ticks(stat: &str) -> Result<(u64, u64)> {
    let rest = stat.rsplit_once(") ").ok_or("malformed stat")?.1;
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after ") ".
    Ok((fields[11].parse()?, fields[12].parse()?))
}

/// CPU seconds (user plus system) of every process named `command` (as
/// `/proc/PID/comm` has it): the database server's processes, which are not
/// children of ours. Processes that ended between two readings drop out, so
/// read it around a phase in which they all live.
pub fn command_cpu_seconds(command: &str) -> f64 {
    let mut ticks = 0;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        if comm.trim_end() != command {
            continue;
        }
        if let Ok((user, system)) = std::fs::read_to_string(path.join("stat"))
            .map_err(Into::into)
            .and_then(|stat| stat_ticks(&stat))
        {
            ticks += user + system;
        }
    }
    ticks as f64 / TICKS
}

/// The whole machine's CPU time since boot, in seconds summed over cores.
#[derive(Clone, Copy, Debug, Default)]
pub struct MachineCpu {
    /// Running anything: user, nice, system, irq, softirq, steal.
    pub busy: f64,
    /// Idle with a disk write outstanding (fsync).
    pub iowait: f64,
    /// Everything, idle included.
    pub total: f64,
}

pub fn machine_cpu() -> Result<MachineCpu> {
    let text = std::fs::read_to_string("/proc/stat")?;
    let line = text
        .lines()
        .find(|line| line.starts_with("cpu "))
        .ok_or("no cpu line in /proc/stat")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let field = |i: usize| fields.get(i).copied().unwrap_or(0) as f64 / TICKS;
    // user nice system idle iowait irq softirq steal (guest time is already
    // inside user).
    let busy = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
    Ok(MachineCpu {
        busy,
        iowait: field(4),
        total: busy + field(3) + field(4),
    })
}
