//! Processes the harness starts (a fresh bus, the echo peer, redis) and
//! what it reads about server processes from /proc: CPU time and memory.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child process killed (and its scratch directory removed) on drop.
pub struct Spawned {
    child: Child,
    pub addr: String,
    dir: Option<PathBuf>,
}

impl Spawned {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs `agentbus <args>` with `env` set and waits for its `... listening
    /// on ADDR` line.
    pub fn agentbus(args: &[&str], env: &[(&str, &str)], dir: Option<PathBuf>) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find the agentbus binary: {e}"))?;
        let mut child = Command::new(exe)
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start agentbus {}: {e}", args.join(" ")))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let Some(addr) = line
            .strip_prefix("agentbus listening on ")
            .or_else(|| line.rsplit(' ').next())
        else {
            let _ = child.kill();
            return Err(format!("agentbus {} did not start: {line:?}", args.join(" ")));
        };
        if addr.is_empty() {
            let _ = child.kill();
            return Err(format!("agentbus {} did not start", args.join(" ")));
        }
        Ok(Self {
            addr: format!("http://{addr}"),
            child,
            dir,
        })
    }

    /// A fresh bus on a free loopback port with its own data directory
    /// (and `env`: a database URL is passed there rather than in the
    /// arguments, which every user of the machine can read).
    pub fn bus(store: &str, extra: &[String], env: &[(&str, &str)]) -> Result<Self, String> {
        let dir = scratch_dir("bus")?;
        let data_dir = dir.to_string_lossy().into_owned();
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            store,
            "--data-dir",
            &data_dir,
        ];
        args.extend(extra.iter().map(String::as_str));
        Self::agentbus(&args, env, Some(dir))
    }

    /// Wraps a process started elsewhere (redis-server).
    #[cfg(feature = "peers")]
    pub fn wrap(child: Child, addr: String, dir: Option<PathBuf>) -> Self {
        Self { child, addr, dir }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A new empty directory under the system temp dir.
pub fn scratch_dir(what: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("agentbus-bench-{what}-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// User plus system CPU time the process has used so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, cpu)| cpu)
}

/// The command name and the CPU time in a `/proc/PID/stat` line.
fn parse_stat(stat: &str) -> Option<(&str, Duration)> {
    // The command name is parenthesised and may hold spaces and parentheses.
    let name = &stat[stat.find('(')? + 1..stat.rfind(')')?];
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // /proc reports USER_HZ ticks, which Linux fixes at 100 for userspace.
    Some((name, Duration::from_millis(ticks * 10)))
}

/// CPU time so far of every process named `postgres` (the postmaster, its
/// backends and its background writers), by PID; an error says why there
/// is nothing to read (PostgreSQL on another host or in another PID
/// namespace, /proc hidden).
pub fn postgres_cpu_times() -> Result<HashMap<u32, Duration>, String> {
    let entries = std::fs::read_dir("/proc").map_err(|e| format!("cannot list /proc: {e}"))?;
    let mut times = HashMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        // A process may exit between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(("postgres", cpu)) = parse_stat(&stat) {
            times.insert(pid, cpu);
        }
    }
    if times.is_empty() {
        return Err("no process named postgres is visible in /proc \
                    (PostgreSQL on another host or in another PID namespace?)"
            .into());
    }
    Ok(times)
}

/// The processes whose CPU time a run reports: the bus's nodes and, when
/// the bus stores in a local PostgreSQL, every postgres process.
#[derive(Debug, Clone, Default)]
pub struct CpuProbe {
    pub pids: Vec<u32>,
    pub postgres: bool,
}

/// What a [`CpuProbe`] read at one moment.
struct CpuSample {
    nodes: Vec<Option<Duration>>,
    postgres: Option<Result<HashMap<u32, Duration>, String>>,
}

impl CpuProbe {
    fn sample(&self) -> CpuSample {
        CpuSample {
            nodes: self.pids.iter().map(|&pid| cpu_time(pid)).collect(),
            postgres: self.postgres.then(postgres_cpu_times),
        }
    }
}

/// CPU time used between two samples: per node (None when unreadable) and
/// by PostgreSQL.
#[derive(Debug, Clone, Default)]
pub struct CpuUsed {
    pub nodes: Vec<Option<Duration>>,
    /// Summed over the postgres processes alive at the end; an error when
    /// there was nothing to read.
    pub postgres: Option<Result<Duration, String>>,
    /// Postgres processes that exited during the window (their CPU time is
    /// not counted).
    pub postgres_exited: usize,
}

impl CpuUsed {
    fn between(before: &CpuSample, after: &CpuSample) -> Self {
        let nodes = before
            .nodes
            .iter()
            .zip(&after.nodes)
            .map(|(a, b)| a.zip(*b).map(|(a, b)| b.saturating_sub(a)))
            .collect();
        let mut postgres_exited = 0;
        let postgres = match (&before.postgres, &after.postgres) {
            (Some(Ok(before)), Some(Ok(after))) => {
                postgres_exited = before.keys().filter(|pid| !after.contains_key(pid)).count();
                // A process started in the window used all its time in it.
                let used = after
                    .iter()
                    .map(|(pid, b)| b.saturating_sub(before.get(pid).copied().unwrap_or_default()));
                Some(Ok(used.sum()))
            }
            (Some(Err(e)), _) | (_, Some(Err(e))) => Some(Err(e.clone())),
            _ => None,
        };
        Self {
            nodes,
            postgres,
            postgres_exited,
        }
    }

    /// All nodes together, when every node could be read.
    pub fn total(&self) -> Option<Duration> {
        if self.nodes.is_empty() {
            return None;
        }
        self.nodes.iter().copied().sum()
    }
}

/// Samples a [`CpuProbe`] when the warm-up ends and again when asked.
pub struct CpuWindow {
    probe: CpuProbe,
    start: tokio::task::JoinHandle<CpuSample>,
}

impl CpuWindow {
    pub fn start(probe: CpuProbe, warmup: Duration) -> Self {
        let sampled = probe.clone();
        let start = tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            sampled.sample()
        });
        Self { probe, start }
    }

    pub async fn finish(self) -> CpuUsed {
        let end = self.probe.sample();
        match self.start.await {
            Ok(start) => CpuUsed::between(&start, &end),
            Err(_) => CpuUsed::default(),
        }
    }
}

/// Resident memory of the process, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A free TCP port on loopback (for servers that cannot report theirs).
#[cfg(feature = "peers")]
pub fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

/// Waits until `addr` accepts TCP connections.
#[cfg(feature = "peers")]
pub async fn wait_for_port(addr: &str, timeout: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("{addr} did not accept connections within {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::parse_stat;

    #[test]
    fn a_stat_line_gives_the_command_name_and_user_plus_system_time() {
        let line = "2226 (postgres) S 2225 2225 2225 0 -1 4194368 2380 0 0 0 120 35 0 0 20 0 1 0 1234 0 0";
        assert_eq!(parse_stat(line), Some(("postgres", Duration::from_millis(1550))));
        // A name may hold spaces and parentheses; the last ')' ends it.
        let odd = "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 9 0 0";
        assert_eq!(parse_stat(odd), Some(("a (b) c", Duration::from_millis(70))));
    }
}
