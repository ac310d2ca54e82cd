//! Process figures: this process's CPU time (getrusage), a server's CPU
//! time and RSS (/proc/<pid>/stat and status), and the open-files limit
//! thousands of client sockets need.

use anyhow::{bail, Context};
use nix::sys::resource::{getrlimit, getrusage, setrlimit, Resource, UsageWho};
use nix::unistd::{sysconf, SysconfVar};

/// User + system CPU seconds of this process, all threads.
pub fn own_cpu_s() -> anyhow::Result<f64> {
    let u = getrusage(UsageWho::RUSAGE_SELF)?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(secs(u.user_time()) + secs(u.system_time()))
}

/// User + system CPU seconds of process `pid`, all its threads (fields 14
/// and 15 of /proc/<pid>/stat, in clock ticks).
pub fn cpu_s(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count from after it.
    let rest = &stat[stat.rfind(')').context("malformed stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so fields 14 and 15 are at 11 and 12.
    let (ut, st): (u64, u64) = (
        f.get(11).context("utime")?.parse()?,
        f.get(12).context("stime")?.parse()?,
    );
    let tck = sysconf(SysconfVar::CLK_TCK)?.context("CLK_TCK")? as f64;
    Ok((ut + st) as f64 / tck)
}

/// Resident set size of process `pid` in KiB (VmRSS).
pub fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

/// Raise the soft open-files limit to `need` (or the hard limit).
pub fn raise_open_files_limit(need: u64) -> anyhow::Result<()> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= need {
        return Ok(());
    }
    if hard < need {
        bail!("{need} open files needed, hard limit is {hard}: run several generators");
    }
    setrlimit(Resource::RLIMIT_NOFILE, need, hard)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let pid = std::process::id();
        assert!(rss_kb(pid).unwrap() > 0);
        assert!(cpu_s(pid).unwrap() >= 0.0);
        assert!(own_cpu_s().unwrap() >= 0.0);
    }
}
