//! Processes the harness starts (a fresh bus, the echo peer, redis) and
//! what it reads about a server process from /proc: CPU time and memory.

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

    /// Runs `agentbus <args>` and waits for its `... listening on ADDR` line.
    pub fn agentbus(args: &[&str], dir: Option<PathBuf>) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find the agentbus binary: {e}"))?;
        let mut child = Command::new(exe)
            .args(args)
            .env("RUST_LOG", "warn")
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

    /// A fresh bus on a free loopback port with its own data directory.
    pub fn bus(store: &str, extra: &[String]) -> Result<Self, String> {
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
        Self::agentbus(&args, Some(dir))
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
    // Fields after the parenthesised command name, which may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // /proc reports USER_HZ ticks, which Linux fixes at 100 for userspace.
    Some(Duration::from_millis(ticks * 10))
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
