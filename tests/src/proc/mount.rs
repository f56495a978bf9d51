//! A FUSE mount by `aifs-mount` of a `ProcCluster`, in a temp dir of its
//! own; dropped, it unmounts and stops the client, also when the test
//! panics.
use super::{spawn_logged, stop, ProcCluster};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn is_mounted(path: &Path) -> bool {
    let p = path.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| m.lines().any(|l| l.split_whitespace().nth(1) == Some(p.as_str())))
        .unwrap_or(false)
}

/// A FUSE mount of a cluster in a fresh temp dir.
pub struct Mount {
    pub path: PathBuf,
    pub(super) child: Option<Child>,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Mount {
    pub fn new(c: &ProcCluster) -> Result<Mount> {
        Self::with_settings(c, "")
    }

    /// A mount whose client config has `settings` (top-level TOML lines)
    /// added to the cluster's client.toml.
    pub fn with_settings(c: &ProcCluster, settings: &str) -> Result<Mount> {
        let mut cfg = c.path("client.toml");
        if !settings.is_empty() {
            let base = std::fs::read_to_string(&cfg)?;
            let n = std::fs::read_dir(c.path("logs"))?.count();
            cfg = c.path(&format!("client{n}.toml"));
            std::fs::write(&cfg, format!("{settings}\n{base}"))?;
        }
        Self::with_config(c, &cfg)
    }

    /// A mount of `c` by a client with the config at `cfg`.
    pub fn with_config(c: &ProcCluster, cfg: &Path) -> Result<Mount> {
        let dir = tempfile::Builder::new().prefix("aifs-mnt-").tempdir()?;
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path)?;
        let n = std::fs::read_dir(c.path("logs"))?.count();
        let log = c.path(&format!("logs/client{n}.log"));
        let child = spawn_logged(
            "aifs-mount",
            &["--config", cfg.to_str().unwrap_or_default(), path.to_str().unwrap_or_default()],
            &log,
        )?;
        let mut m = Mount { path, child: Some(child), _dir: dir, log };
        let t = Instant::now();
        while !is_mounted(&m.path) {
            if let Some(ch) = m.child.as_mut() {
                if let Ok(Some(st)) = ch.try_wait() {
                    bail!("aifs-mount exited with {st}: {}", std::fs::read_to_string(&m.log).unwrap_or_default());
                }
            }
            if t.elapsed() > Duration::from_secs(15) {
                bail!("mount did not appear");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(m)
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// Unmount now (as `fusermount3 -u` would) and wait for the client to exit.
    pub fn unmount(&mut self) {
        if is_mounted(&self.path) {
            let ok = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.path)
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.path).status();
            }
        }
        if let Some(mut c) = self.child.take() {
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            stop(&mut c, libc::SIGKILL, Duration::from_secs(1));
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- {} ----\n{}", self.log.display(), std::fs::read_to_string(&self.log).unwrap_or_default());
        }
        self.unmount();
    }
}

impl Mount {
    /// `kill -9` the client process, then detach the dead mount.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

impl Mount {
    /// SIGTERM the client (as an init system would) and wait for it to
    /// unmount and exit; true if it exited by itself within `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(mut c) = self.child.take() else { return true };
        // SAFETY: kill(2) on a pid we spawned and have not yet reaped.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let t = Instant::now();
        while t.elapsed() < timeout {
            if let Ok(Some(_)) = c.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    pub fn is_mounted(&self) -> bool {
        is_mounted(&self.path)
    }
}
