//! This process's part in the shards' Raft groups (DESIGN.md, "Metadata
//! that survives losing a machine"): the groups are opened when the
//! process starts and live as long as it does, led here or not. The
//! namespace service runs over the groups this process is to lead only
//! while it leads every one of them ([`Replica::ready_for`]); front.rs
//! answers requests for the other shards "not leader", naming theirs.
//!
//! Which groups a process is to lead ([`Replica::wanted`]): shard 0's
//! while it leads it, with every other group not placed on another
//! member that answers (placing.rs); and the groups placed on it. With
//! nothing placed, one process leads all shards. A process stands for
//! election in each group it is to lead and does not ([`Replica::claim`]),
//! and stops its heartbeats in each it leads and is not to, so that the
//! group elects again. Every group elects by itself too: a claimant whose
//! log is behind in a group cannot win it until another member, elected,
//! has brought its log up to date.
//!
//! A leader serves reads under a lease: only while a majority acknowledged
//! its heartbeats within [`LEASE`], shorter than the time before a member
//! would vote for anyone else (openraft's lease, the election timeout's
//! upper bound, counted from when the member heard the heartbeat, which
//! is after the leader sent it).
use crate::placing::Placement;
use crate::store::raft::{self, net, Members, NodeId, ShardRaft};
use crate::store::media::Disk;
use crate::store::ShardStore;
use aifs_common::Result;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// How long after its last majority acknowledgement a leader answers.
pub const LEASE: Duration = Duration::from_millis(raft::ELECTION_MAX_MS * 2 / 3);

/// A leader whose appends have not come for this long (its lease, which
/// heartbeats renew every `raft::HEARTBEAT_MS`) is not named to callers.
const SILENT: Duration = Duration::from_millis(raft::ELECTION_MAX_MS);

/// How long a claim of a group waits before trying again.
const CLAIM_EVERY: Duration = Duration::from_millis(raft::ELECTION_MAX_MS);

/// A member placed to lead a shard that has not answered shard 0's
/// leader for this long (its heartbeats go every `raft::HEARTBEAT_MS`)
/// is taken for down: shard 0's leader leads the shard meanwhile.
const ANSWERS_WITHIN: Duration = Duration::from_secs(1);

/// How long a group left here is not opened again by a message from its
/// leader: one sent before it took this process out may come late.
const LEFT_LATELY: Duration = Duration::from_secs(10);

pub struct Group {
    pub shard: u32,
    pub db: Arc<redb::Database>,
    pub raft: ShardRaft,
    /// When a majority last acknowledged this member as leader.
    acked: crate::store::Acked,
    /// This process's bids for the lead here since it last led the group
    /// or heard a leader of it.
    claims: Mutex<Claims>,
    /// When an append of the leader of this member's term last came.
    heard: Mutex<Option<Instant>>,
    /// The group's one writer; each namespace service takes a handle.
    store: ShardStore,
}

/// Bids for a group's lead: when the last was made, and how many have
/// been made since the group was last led here or a leader was heard.
#[derive(Default)]
struct Claims {
    last: Option<Instant>,
    made: u32,
}

/// The longest wait between two bids: [`CLAIM_EVERY`] doubled this often.
const CLAIM_DOUBLINGS: u32 = 3;

impl Group {
    /// Open shard `shard`'s database in `dir` and start its group over
    /// `members`, its log in `logs`.
    async fn open(logs: &Arc<raft::Logs>, dir: &Path, shard: u32, members: &Members, upkeep: &raft::LogUpkeep) -> Result<Group> {
        let db = ShardStore::open_db(&Disk, dir, shard)?;
        let raft = raft::start(logs, dir, shard, db.clone(), upkeep, members).await?;
        let acked = Arc::new(Mutex::new(None));
        tokio::spawn(watch_acks(raft.clone(), members.me, acked.clone()));
        let store = ShardStore::over(shard, db.clone(), raft.clone(), false, (!members.is_solo()).then(|| acked.clone()))?;
        Ok(Group { shard, db, raft, acked, claims: Mutex::default(), heard: Mutex::new(None), store })
    }

    /// Whether this process may bid for the lead now, counting the bid.
    /// Each bid that did not bring the lead waits twice as long as the
    /// last, up to [`CLAIM_EVERY`] times 2^[`CLAIM_DOUBLINGS`]. A bid
    /// from a member whose log is behind fails, and its higher term,
    /// every 600 ms, kept a new cluster's group from electing anyone
    /// for 10 s: the members that could win need the quiet between
    /// bids for their own timers.
    fn claim_due(&self) -> bool {
        let Ok(mut c) = self.claims.lock() else { return false };
        let wait = CLAIM_EVERY * (1 << c.made.min(CLAIM_DOUBLINGS));
        let due = c.last.is_none_or(|at| at.elapsed() >= wait);
        if due {
            *c = Claims { last: Some(Instant::now()), made: c.made + 1 };
        }
        due
    }

    /// The group is led here, or a leader of it was heard: the next bid
    /// waits [`CLAIM_EVERY`] at most.
    fn claims_answered(&self) {
        if let Ok(mut c) = self.claims.lock() {
            c.made = 0;
        }
    }

    /// When an append of the leader of this member's term last came
    /// (takeover.rs); None before the first.
    pub fn heard(&self) -> Option<Instant> {
        self.heard.lock().ok().and_then(|h| *h)
    }
}

pub struct Replica {
    pub members: Members,
    /// Shard 0's group, whose members are every MDS process.
    zero: Arc<Group>,
    /// The groups this process is a member of, by shard (None: one it is
    /// not in). Read through [`Replica::held`] and [`Replica::group`].
    groups: RwLock<Vec<Option<Arc<Group>>>>,
    /// The groups are new here and wait to be made (`make_groups`): no
    /// Raft message but `Held` is taken until then.
    unmade: AtomicBool,
    /// This process hands the lead over (handover.rs): it sends no
    /// heartbeats, claims no group and serves nothing.
    yielding: AtomicBool,
    /// Held through each step of a membership change: one at a time.
    pub(crate) changing: tokio::sync::Mutex<()>,
    /// The groups this process is to lead, as the last claim found.
    wanted: Mutex<Vec<bool>>,
    /// The groups the namespace service here covers, or covered until
    /// it let them go (its requests done, its intents carried over):
    /// their heartbeats go on until then.
    kept: Mutex<Vec<bool>>,
    /// When the groups were opened here.
    opened: Instant,
    /// What a group joined later is opened with ([`Replica::open_group`]).
    logs: Arc<raft::Logs>,
    dir: std::path::PathBuf,
    upkeep: raft::LogUpkeep,
    /// Held while a group is opened or left: once each.
    opening: tokio::sync::Mutex<()>,
    /// The groups this process left lately, and when: a message their
    /// leader sent before does not open them again ([`Replica::serve`]).
    left: Mutex<BTreeMap<u32, Instant>>,
    /// Who leads the groups not held here, as their members say.
    pub(crate) others: crate::others::Others,
}

/// `m` reports its member `me` leading: in the leader's state (a leader
/// taken out of the group steps down to learner, and still names itself
/// as the leader it last knew).
pub fn leads(m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>, me: NodeId) -> bool {
    m.state == openraft::ServerState::Leader && m.current_leader == Some(me)
}

impl Replica {
    /// Open the databases in `dir` of the `nshards` shards whose groups
    /// this process is a member of, and start those groups over
    /// `members`, their logs kept as `upkeep` says. One-member groups are
    /// led here when this returns.
    ///
    /// Which groups: in a new directory, shard 0's and those
    /// [`Members::of_shard`] lists this process in (only shard 0's for a
    /// process that joins: the others are opened as their leaders send
    /// to it, [`Replica::serve`]); else those whose databases are there.
    pub async fn open(dir: &Path, nshards: u32, members: Members, upkeep: &raft::LogUpkeep) -> Result<Replica> {
        if nshards == 0 {
            return Err(aifs_common::Error::InvalidArgument("an MDS needs one shard at least".into()));
        }
        let new = !dir.join(ShardStore::file_name(0)).exists();
        crate::namespace::check_shard_count(dir, nshards)?;
        let logs = raft::Logs::open(&Disk, dir)?;
        let held = |shard: u32| match new {
            true => shard == 0 || (!members.join && members.of_shard(shard).contains_key(&members.me)),
            false => shard == 0 || dir.join(ShardStore::file_name(shard)).exists(),
        };
        let mut groups = Vec::new();
        for shard in 0..nshards {
            groups.push(match held(shard) {
                true => Some(Arc::new(Group::open(&logs, dir, shard, &members, upkeep).await?)),
                false => None,
            });
        }
        let Some(zero) = groups.first().cloned().flatten() else {
            return Err(aifs_common::Error::Io("shard 0's group did not open".into()));
        };
        // the names of store files just made
        crate::store::sync_dir(dir)?;
        let mut unmade = false;
        for g in groups.iter().flatten() {
            unmade |= !members.is_solo() && !g.raft.is_initialized().await.map_err(|e| aifs_common::Error::Io(format!("shard group: {e}")))?;
            let m = g.raft.metrics().borrow().clone();
            let membership = m.membership_config.membership();
            let alone = membership.get_node(&raft::SELF).is_some_and(|n| n.addr == raft::SOLO_ADDR);
            if !members.is_solo() && alone && members.me != raft::SELF {
                return Err(aifs_common::Error::InvalidArgument(format!(
                    "{} was made by a one-process MDS, whose member id is {}: give this process `id = {}` to grow it",
                    dir.display(),
                    raft::SELF,
                    raft::SELF
                )));
            }
        }
        let wanted = Mutex::new(vec![members.is_solo(); groups.len()]);
        let kept = Mutex::new(vec![false; groups.len()]);
        Ok(Replica {
            members,
            zero,
            groups: RwLock::new(groups),
            unmade: AtomicBool::new(unmade),
            yielding: AtomicBool::new(false),
            changing: Default::default(),
            wanted,
            kept,
            opened: Instant::now(),
            logs,
            dir: dir.to_path_buf(),
            upkeep: upkeep.clone(),
            opening: Default::default(),
            left: Default::default(),
            others: Default::default(),
        })
    }

    /// Shard `shard`'s group, opened here if it is not yet: this process
    /// is being added to it (its leader sends to it).
    async fn open_group(&self, shard: u32) -> Result<Arc<Group>> {
        let _one = self.opening.lock().await;
        if let Some(g) = self.group(shard) {
            return Ok(g);
        }
        if shard >= self.shards() {
            return Err(aifs_common::Error::InvalidArgument(format!("there is no shard {shard}")));
        }
        let g = Arc::new(Group::open(&self.logs, &self.dir, shard, &self.members, &self.upkeep).await?);
        crate::store::sync_dir(&self.dir)?;
        tracing::info!(shard, "joined the shard's group: its leader sent to this MDS");
        if let Some(slot) = self.groups.write().unwrap_or_else(PoisonError::into_inner).get_mut(shard as usize) {
            *slot = Some(g.clone());
        }
        Ok(g)
    }

    /// Drop this process's copy of shard `shard`'s group, which its
    /// leader took it out of at log index `index`
    /// (`GroupStep::Leave`): stop it, and remove its database and its
    /// log. Not if this process has seen a later membership of the
    /// group (it was added back since), or leads it; never shard 0's,
    /// which every process holds.
    pub async fn leave_group(&self, shard: u32, index: u64) -> Result<()> {
        if shard == 0 {
            return Err(aifs_common::Error::InvalidArgument("no MDS leaves shard 0's group this way".into()));
        }
        // A group's first membership (index 0) is the one it was made
        // with, which leaves out none of its members.
        if index == 0 {
            return Err(aifs_common::Error::InvalidArgument(format!("told to leave shard {shard}'s group by its first membership")));
        }
        let _one = self.opening.lock().await;
        let Some(g) = self.group(shard) else { return Ok(()) };
        let (later, led) = {
            let rx = g.raft.metrics();
            let m = rx.borrow();
            (crate::membership::membership_index(&m) > index, leads(&m, self.members.me))
        };
        if later || led {
            tracing::info!(shard, index, later, led, "asked to leave the shard's group: staying");
            return Ok(());
        }
        if let Some(slot) = self.groups.write().unwrap_or_else(PoisonError::into_inner).get_mut(shard as usize) {
            *slot = None;
        }
        self.left.lock().unwrap_or_else(PoisonError::into_inner).insert(shard, Instant::now());
        if let Err(e) = g.raft.shutdown().await {
            tracing::warn!(shard, error = %e, "stopping the shard's group to leave it");
        }
        self.logs.forget(shard).await?;
        // A namespace service may still hold the database open: its file
        // goes once that closes.
        std::fs::remove_file(self.dir.join(ShardStore::file_name(shard))).map_err(|e| aifs_common::Error::Io(format!("removing shard {shard}'s database: {e}")))?;
        crate::store::sync_dir(&self.dir)?;
        tracing::info!(shard, index, "left the shard's group: its database and log are removed here");
        Ok(())
    }

    /// The groups are new here and wait for [`Replica::make_groups`].
    pub fn unmade(&self) -> bool {
        self.unmade.load(Ordering::Acquire)
    }

    pub(crate) fn set_made(&self) {
        self.unmade.store(false, Ordering::Release);
    }

    /// Shard stores over the groups, for a namespace to run on while this
    /// process leads them: the handles of the services before it are
    /// refused from now on (`ShardStore::successor`).
    /// A shard whose group has no member here gets a stand-in that
    /// refuses every read and write (`ShardStore::not_held`).
    pub fn stores(&self) -> Vec<Arc<ShardStore>> {
        let store = |s| match self.group(s) {
            Some(g) => g.store.successor(),
            None => ShardStore::not_held(s),
        };
        (0..self.shards()).map(|s| Arc::new(store(s))).collect()
    }

    /// Shard `shard`'s group, if this process is a member of it.
    pub fn group(&self, shard: u32) -> Option<Arc<Group>> {
        self.groups.read().unwrap_or_else(PoisonError::into_inner).get(shard as usize).cloned().flatten()
    }

    /// Every group this process is a member of, in shard order.
    pub fn held(&self) -> Vec<Arc<Group>> {
        self.groups.read().unwrap_or_else(PoisonError::into_inner).iter().flatten().cloned().collect()
    }

    /// Shard 0's group, which every member holds.
    pub fn zero(&self) -> &Group {
        &self.zero
    }

    /// How many shards there are, whether this process is in their
    /// groups or not.
    pub fn shards(&self) -> u32 {
        self.groups.read().unwrap_or_else(PoisonError::into_inner).len() as u32
    }

    /// This process hands the lead over, or stops doing so.
    pub fn set_yielding(&self, on: bool) {
        self.yielding.store(on, Ordering::Release);
    }

    pub fn yielding(&self) -> bool {
        self.yielding.load(Ordering::Acquire)
    }

    /// The groups `led` marks, by shard (None for one not held here).
    fn marked<'a>(&'a self, led: &'a [bool]) -> impl Iterator<Item = Option<Arc<Group>>> + 'a {
        led.iter().enumerate().filter(|(_, l)| **l).map(|(s, _)| self.group(s as u32))
    }

    /// This process leads `g` within its lease.
    fn leads_in_lease(&self, g: &Group) -> bool {
        leads(&g.raft.metrics().borrow(), self.members.me)
            && (self.members.is_solo() || g.acked.lock().ok().and_then(|a| *a).is_some_and(|at| at.elapsed() < LEASE))
    }

    /// This process leads each group `led` marks, each within its lease,
    /// and is not handing the lead over.
    pub fn leads_each(&self, led: &[bool]) -> bool {
        !self.yielding() && self.marked(led).all(|g| g.as_ref().is_some_and(|g| self.leads_in_lease(g)))
    }

    /// This process leads shard `shard`'s group within its lease, and is
    /// not handing the lead over.
    pub fn leads_shard(&self, shard: u32) -> bool {
        !self.yielding() && self.group(shard).is_some_and(|g| self.leads_in_lease(&g))
    }

    /// The groups this process is to lead, as the last claim found (all
    /// of them for one-member groups).
    pub fn wanted(&self) -> Vec<bool> {
        self.wanted.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// Shard `shard`'s group is among those this process is to lead.
    pub fn is_to_lead(&self, shard: u32) -> bool {
        self.wanted.lock().is_ok_and(|w| w.get(shard as usize).copied().unwrap_or(false))
    }

    /// Whether this process is to lead `g`, given `placed` and whether
    /// it leads shard 0.
    ///
    /// Unless a member that answers is placed to lead it, a group is led
    /// by shard 0's leader, or, in a group shard 0's leader does not vote
    /// in (groups over subsets), by whichever member the group's own
    /// timers elected.
    fn wants(&self, g: &Group, placed: &Placement, leads_zero: bool) -> bool {
        if g.shard == 0 {
            return leads_zero;
        }
        let me = self.members.me;
        let voter = |id: &NodeId| crate::membership::votes(g.raft.metrics().borrow().membership_config.membership(), *id);
        let zero_leader = self.zero.raft.metrics().borrow().current_leader;
        let steward = match zero_leader.filter(voter) {
            Some(_) => leads_zero,
            None => leads(&g.raft.metrics().borrow(), me),
        };
        // A placed member whose appends in the group still come leads it,
        // however late its answers to this process are (a busy link).
        let leading_there = |p: NodeId| !silent(g) && g.raft.metrics().borrow().current_leader == Some(p);
        match placed.get(&g.shard).copied().filter(voter) {
            Some(p) if p == me => true,
            Some(p) if steward && (self.answers(p) || leading_there(p)) => false,
            _ => steward,
        }
    }

    /// Member `id` answered this process's Raft messages within
    /// [`ANSWERS_WITHIN`].
    pub(crate) fn answers(&self, id: NodeId) -> bool {
        let Some(peers) = &self.members.peers else { return false };
        let addr = self.zero.raft.metrics().borrow().membership_config.membership().get_node(&id).and_then(|n| n.addr.parse().ok());
        addr.is_some_and(|a| peers.answers(a, ANSWERS_WITHIN))
    }

    /// The index of the last entry shard 0's copy here has applied.
    pub fn zero_applied(&self) -> Option<u64> {
        self.zero.raft.metrics().borrow().last_applied.map(|l| l.index)
    }

    /// This process leads shard 0's group.
    pub fn leads_zero(&self) -> bool {
        leads(&self.zero.raft.metrics().borrow(), self.members.me)
    }

    /// Some group `led` marks is not led here: another member leads it,
    /// or none does.
    pub fn lost_any(&self, led: &[bool]) -> bool {
        let me = self.members.me;
        self.marked(led).any(|g| g.is_none_or(|g| !leads(&g.raft.metrics().borrow(), me)))
    }

    /// The namespace may start here over the groups `led` marks (one at
    /// least): each led here, in its lease, with its whole log applied in
    /// this term (so it holds everything acknowledged before).
    pub fn ready_for(&self, led: &[bool]) -> bool {
        led.contains(&true)
            && self.leads_each(led)
            && self.marked(led).all(|g| {
                let Some(g) = g else { return false };
                let m = g.raft.metrics().borrow().clone();
                m.last_applied.is_some_and(|l| l.leader_id.term == m.current_term && Some(l.index) == m.last_log_index)
            })
    }

    /// The address of the process leading shard 0's group, as its
    /// membership names it, if one leads and it is another.
    pub fn leader_addr(&self) -> String {
        self.leader_hint(0)
    }

    /// The address of the process leading shard 0's group, this one's
    /// included, as the membership names it: "" if none is known, or if
    /// the one this member knows has been silent past its lease (most
    /// likely dead: named, callers would only wait out a handshake there).
    pub fn leading_addr(&self) -> String {
        self.leading_addr_of(0)
    }

    /// [`Replica::leading_addr`] of shard `shard`'s group; for a group
    /// not held here, as its members last said (others.rs); "" for a
    /// shard there is not.
    pub fn leading_addr_of(&self, shard: u32) -> String {
        match self.group(shard) {
            Some(g) => leading_addr_in(&g.raft.metrics().borrow(), self.members.me, silent(&g)),
            None => self.others.leader_addr(shard),
        }
    }

    /// The address of the process leading shard `shard`'s group, if one
    /// leads and it is another: where its requests are sent.
    pub fn leader_hint(&self, shard: u32) -> String {
        match self.group(shard).is_some_and(|g| leads(&g.raft.metrics().borrow(), self.members.me)) {
            true => String::new(),
            false => self.leading_addr_of(shard),
        }
    }

    /// No append of shard 0's leader has come for [`SILENT`].
    pub(crate) fn leader_silent(&self) -> bool {
        silent(&self.zero)
    }

    /// [`Replica::leading_addr`] once it names a process other than
    /// `past` (the one a caller waits at), or as it is after `wait`.
    pub async fn leader_other_than(&self, past: &str, wait: Duration) -> String {
        let past: Option<std::net::SocketAddr> = past.parse().ok();
        let me = self.members.me;
        let news = |m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>| {
            let addr = leading_addr_in(m, me, self.leader_silent());
            !addr.is_empty() && addr.parse().ok() != past
        };
        let mut rx = self.zero.raft.metrics();
        let _ = tokio::time::timeout(wait, rx.wait_for(news)).await;
        self.leading_addr()
    }

    /// One step towards each group led where it is to be: stand for
    /// election in each group this process is to lead and does not; stop
    /// heartbeats in those led here that it is not to lead, and in all of
    /// them while it hands the lead over.
    pub async fn claim(&self) {
        let me = self.members.me;
        if self.members.is_solo() {
            return;
        }
        let placed = match crate::placing::placement_here(&self.zero.db) {
            Ok(p) => p,
            // Nothing changes until it can be read.
            Err(e) => return e.log("reading where the shards are placed"),
        };
        let yielding = self.yielding();
        self.zero.raft.runtime_config().heartbeat(!yielding);
        let others: Vec<Arc<Group>> = self.held().into_iter().filter(|g| g.shard != 0).collect();
        if yielding {
            for g in &others {
                g.raft.runtime_config().heartbeat(false);
            }
            self.set_wanted(vec![false; self.shards() as usize]);
            return;
        }
        let leads_zero = self.leads_zero();
        let wanted: Vec<bool> = (0..self.shards()).map(|s| self.group(s).is_some_and(|g| self.wants(&g, &placed, leads_zero))).collect();
        let kept = self.kept.lock().map(|k| k.clone()).unwrap_or_default();
        for g in &others {
            let m = g.raft.metrics().borrow().clone();
            let here = leads(&m, me);
            let want = wanted[g.shard as usize];
            // A shard's member placed is let go to once it holds the log:
            // it could not be elected before, and would only unsettle
            // the group trying.
            let placed_elsewhere = placed.get(&g.shard).filter(|p| **p != me);
            let behind = placed_elsewhere.is_some_and(|p| crate::membership::behind(&m, *p) > crate::handover::CAUGHT_UP);
            let holding = here && !want && (behind || kept.get(g.shard as usize).copied().unwrap_or(false));
            g.raft.runtime_config().heartbeat(want || !here || holding);
            let quiet = silent(g);
            if here || !quiet {
                g.claims_answered();
            }
            if !want || here {
                continue;
            }
            // A member stands once the group's leader has let go of it
            // (its appends stopped for the members' lease of it): that
            // leader brought its log up to date, and the members may vote
            // for another. A bid made sooner fails, and its higher term
            // unseats the leader, which wins again by its own timer with
            // the vote of the member whose bid failed: the two can go on
            // unseating each other. Just started, a member first gives a
            // leader the time to be heard.
            if !quiet || self.opened.elapsed() < SILENT {
                continue;
            }
            if g.claim_due() {
                tracing::info!(shard = g.shard, placed = placed.get(&g.shard).is_some_and(|p| *p == me), "standing for election: this MDS is to lead the shard");
                if let Err(e) = g.raft.trigger().elect().await {
                    tracing::warn!(shard = g.shard, error = %e, "could not stand for election");
                }
            }
        }
        self.set_wanted(wanted);
    }

    /// The groups the namespace service here covers, until it has let
    /// them go ([`Replica::claim`] keeps their heartbeats going).
    pub fn set_kept(&self, kept: Vec<bool>) {
        if let Ok(mut k) = self.kept.lock() {
            *k = kept;
        }
    }

    fn set_wanted(&self, wanted: Vec<bool>) {
        if let Ok(mut w) = self.wanted.lock() {
            *w = wanted;
        }
    }

    /// Answer a Raft message for shard `shard`'s group from another MDS;
    /// one for a group not held here makes this process a member of it
    /// (its leader adds it, membership.rs), once its groups are made.
    pub async fn serve(&self, shard: u32, msg: &[u8]) -> Result<Vec<u8>> {
        let g = match self.group(shard) {
            Some(g) => g,
            None if self.just_left(shard) => return Err(aifs_common::Error::Unavailable(format!("this MDS left shard {shard}'s group moments ago"))),
            None if !self.unmade() => self.open_group(shard).await?,
            None => return Err(aifs_common::Error::Unavailable("this MDS is starting: its groups are not made yet".into())),
        };
        let heard = || {
            if let Ok(mut h) = g.heard.lock() {
                *h = Some(Instant::now());
            }
        };
        let asked = |candidate| self.vote_asked(&g, candidate);
        net::serve(&g.raft, msg, !self.unmade(), |member| self.standing(member), heard, asked, || self.report()).await
    }

    /// This process left shard `shard`'s group within [`LEFT_LATELY`].
    fn just_left(&self, shard: u32) -> bool {
        self.left.lock().unwrap_or_else(PoisonError::into_inner).get(&shard).is_some_and(|at| at.elapsed() < LEFT_LATELY)
    }

    /// Stop every group.
    pub async fn shutdown(&self) {
        for g in self.held() {
            if let Err(e) = g.raft.shutdown().await {
                tracing::warn!(shard = g.shard, error = %e, "stopping shard group");
            }
        }
    }
}

/// No append of `g`'s leader has come for [`SILENT`].
fn silent(g: &Group) -> bool {
    g.heard().is_none_or(|at| at.elapsed() >= SILENT)
}

/// The address of the process `m` names as its group's leader: `me` only
/// while it leads, another only if it is not `silent` ("" if none).
fn leading_addr_in(m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>, me: NodeId, silent: bool) -> String {
    match m.current_leader {
        Some(id) if (id == me && leads(m, id)) || (id != me && !silent) => {
            m.membership_config.membership().get_node(&id).map(|n| n.addr.clone()).unwrap_or_default()
        }
        _ => String::new(),
    }
}

/// Keep `acked` at when a majority last acknowledged `me` as leader of
/// `raft`'s group: from each report, its age subtracted from when it was
/// seen (a report seen late only makes the lease look older).
async fn watch_acks(raft: ShardRaft, me: NodeId, acked: crate::store::Acked) {
    let mut rx = raft.metrics();
    while rx.changed().await.is_ok() {
        let at = {
            let m = rx.borrow_and_update();
            match (leads(&m, me), m.millis_since_quorum_ack) {
                (true, Some(ms)) => Instant::now().checked_sub(Duration::from_millis(ms)),
                _ => None,
            }
        };
        if let Ok(mut a) = acked.lock() {
            *a = at;
        }
    }
}
