//! Who a request acts for. The MDS checks permissions itself
//! (common/src/perm.rs), so every request to it carries the credentials of
//! the process the kernel made the FUSE request for: its fsuid and fsgid
//! (from the request) and its supplementary groups (from
//! `/proc/PID/status`, which FUSE does not pass on).
//!
//! The FUSE glue runs each callback's work inside `scope`, and the pool
//! reads `current()` when it builds a call, so the credentials reach
//! every request the work makes without being threaded through each
//! method. Work that runs on its own (flushes after a recall, capability
//! renewals, heartbeats) acts for the mount itself: the credentials of
//! the `aifs-mount` process. What that work may do the MDS decides by what
//! the session already opened, not by these.
use aifs_common::perm::{Cred, MAX_GROUPS};
use dashmap::DashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The caller of one FUSE request, as the kernel names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

tokio::task_local! {
    static CALLER: Caller;
}

/// Run `work` on behalf of `caller`.
pub fn scope<F: std::future::Future>(caller: Caller, work: F) -> tokio::task::futures::TaskLocalFuture<Caller, F> {
    CALLER.scope(caller, work)
}

/// The credentials requests made now act for.
pub fn current() -> Cred {
    match CALLER.try_with(|c| *c) {
        Ok(c) => Cred::user(c.uid, c.gid, groups_of(c.pid)),
        Err(_) => own().clone(),
    }
}

/// This process's own credentials.
fn own() -> &'static Cred {
    static OWN: OnceLock<Cred> = OnceLock::new();
    OWN.get_or_init(|| {
        // SAFETY: geteuid and getegid cannot fail and touch no memory of ours.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Cred::user(uid, gid, groups_of(std::process::id()))
    })
}

/// How long a process's groups are taken as read: a process that changes
/// its groups (setgroups, rare after start) is seen within this.
const GROUPS_TTL: Duration = Duration::from_secs(2);
/// Processes whose groups are remembered; past this the memory starts over.
const GROUPS_CACHED: usize = 4096;

type GroupCache = DashMap<u32, (Instant, Vec<u32>)>;

/// The supplementary groups of process `pid`: none if it is gone, or for
/// the kernel's own requests (pid 0).
fn groups_of(pid: u32) -> Vec<u32> {
    static CACHE: OnceLock<GroupCache> = OnceLock::new();
    if pid == 0 {
        return Vec::new();
    }
    let cache = CACHE.get_or_init(DashMap::new);
    if let Some(e) = cache.get(&pid) {
        if e.0.elapsed() < GROUPS_TTL {
            return e.1.clone();
        }
    }
    let groups = std::fs::read_to_string(format!("/proc/{pid}/status")).map(|s| parse_groups(&s)).unwrap_or_default();
    if cache.len() >= GROUPS_CACHED {
        cache.clear();
    }
    cache.insert(pid, (Instant::now(), groups.clone()));
    groups
}

/// The `Groups:` line of a `/proc/PID/status`, at most `MAX_GROUPS`.
fn parse_groups(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| g.split_whitespace().filter_map(|n| n.parse().ok()).take(MAX_GROUPS).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_come_from_the_status_line() {
        let status = "Name:\tbash\nUid:\t1000\t1000\t1000\t1000\nGroups:\t4 24 27 1000 \nNgid:\t0\n";
        assert_eq!(parse_groups(status), vec![4, 24, 27, 1000]);
        assert_eq!(parse_groups("Name:\tx\nGroups:\t\n"), Vec::<u32>::new());
        assert_eq!(parse_groups("Name:\tx\n"), Vec::<u32>::new());
    }

    #[tokio::test]
    async fn a_scope_names_the_caller_and_outside_it_the_mount_acts() {
        let me = std::process::id();
        let inside = scope(Caller { uid: 1234, gid: 55, pid: me }, async { current() }).await;
        assert_eq!((inside.uid, inside.gid), (1234, 55));
        assert_eq!(inside.groups, groups_of(me));
        // SAFETY: geteuid cannot fail.
        assert_eq!(current().uid, unsafe { libc::geteuid() });
    }
}
