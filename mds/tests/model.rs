//! Model test of the namespace (STYLE.md §6.2): random sequences of
//! create, mkdir, unlink, rmdir, rename and link run against a BTreeMap
//! model and against the real sharded namespace (4 shards, redb on disk);
//! every answer (or errno) and the whole tree after each step must agree.
use aifs_common::errno;
use aifs_common::ids::InodeId;
use aifs_common::perm::Cred;
use aifs_common::proto::mds::{FileKind, ReqId};
use aifs_common::{Error, LayoutPolicy};
use aifs_mds::cluster::Cluster;
use aifs_mds::namespace::Namespace;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

#[derive(Debug, Clone)]
enum Op {
    Create(usize, usize),
    Mkdir(usize, usize),
    Unlink(usize, usize),
    Rmdir(usize, usize),
    Rename(usize, usize, usize, usize),
    Link(usize, usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    let i = || 0usize..64;
    let n = || 0usize..NAMES.len();
    prop_oneof![
        3 => (i(), n()).prop_map(|(d, x)| Op::Create(d, x)),
        3 => (i(), n()).prop_map(|(d, x)| Op::Mkdir(d, x)),
        2 => (i(), n()).prop_map(|(d, x)| Op::Unlink(d, x)),
        2 => (i(), n()).prop_map(|(d, x)| Op::Rmdir(d, x)),
        4 => (i(), n(), i(), n()).prop_map(|(a, x, b, y)| Op::Rename(a, x, b, y)),
        1 => (i(), i(), n()).prop_map(|(f, d, x)| Op::Link(f, d, x)),
    ]
}

/// The model: model inode id -> what it is; entries per directory.
#[derive(Default)]
struct Model {
    next: u64,
    kind: BTreeMap<u64, FileKind>,
    nlink: BTreeMap<u64, u32>,
    parent: BTreeMap<u64, u64>,
    entries: BTreeMap<u64, BTreeMap<String, u64>>,
    real: BTreeMap<u64, InodeId>,
}

impl Model {
    fn new() -> Model {
        let mut m = Model::default();
        m.kind.insert(0, FileKind::Dir);
        m.entries.insert(0, BTreeMap::new());
        m.parent.insert(0, 0);
        m.real.insert(0, InodeId::ROOT);
        m.next = 1;
        m
    }
    fn dirs(&self) -> Vec<u64> {
        self.kind.iter().filter(|(_, k)| **k == FileKind::Dir).map(|(i, _)| *i).collect()
    }
    fn files(&self) -> Vec<u64> {
        self.kind.iter().filter(|(_, k)| **k == FileKind::File).map(|(i, _)| *i).collect()
    }
    fn pick(v: &[u64], i: usize) -> u64 {
        v[i % v.len()]
    }
    fn is_within(&self, mut d: u64, anc: u64) -> bool {
        loop {
            if d == anc {
                return true;
            }
            if d == 0 {
                return false;
            }
            d = self.parent[&d];
        }
    }
    fn drop_link(&mut self, id: u64) {
        let n = self.nlink.get_mut(&id).expect("live inode");
        *n -= 1;
        if *n == 0 || self.kind[&id] == FileKind::Dir {
            self.nlink.remove(&id);
            self.kind.remove(&id);
            self.entries.remove(&id);
            self.parent.remove(&id);
            self.real.remove(&id);
        }
    }
    fn add(&mut self, dir: u64, name: &str, kind: FileKind) -> u64 {
        let id = self.next;
        self.next += 1;
        self.kind.insert(id, kind);
        self.nlink.insert(id, 1);
        self.entries.get_mut(&dir).expect("dir").insert(name.to_string(), id);
        if kind == FileKind::Dir {
            self.entries.insert(id, BTreeMap::new());
            self.parent.insert(id, dir);
        }
        id
    }

    /// Expected outcome, applying it to the model when it succeeds.
    fn apply(&mut self, op: &Op) -> Result<Option<(u64, FileKind)>, Error> {
        let dirs = self.dirs();
        match *op {
            Op::Create(d, x) | Op::Mkdir(d, x) => {
                let dir = Self::pick(&dirs, d);
                if self.entries[&dir].contains_key(NAMES[x]) {
                    return Err(Error::Exists);
                }
                let kind = if matches!(op, Op::Create(..)) { FileKind::File } else { FileKind::Dir };
                Ok(Some((self.add(dir, NAMES[x], kind), kind)))
            }
            Op::Unlink(d, x) => {
                let dir = Self::pick(&dirs, d);
                let Some(&id) = self.entries[&dir].get(NAMES[x]) else { return Err(Error::NotFound) };
                if self.kind[&id] == FileKind::Dir {
                    return Err(Error::IsDir);
                }
                self.entries.get_mut(&dir).expect("dir").remove(NAMES[x]);
                self.drop_link(id);
                Ok(None)
            }
            Op::Rmdir(d, x) => {
                let dir = Self::pick(&dirs, d);
                let Some(&id) = self.entries[&dir].get(NAMES[x]) else { return Err(Error::NotFound) };
                if self.kind[&id] != FileKind::Dir {
                    return Err(Error::NotDir);
                }
                if !self.entries[&id].is_empty() {
                    return Err(Error::NotEmpty);
                }
                self.entries.get_mut(&dir).expect("dir").remove(NAMES[x]);
                self.drop_link(id);
                Ok(None)
            }
            Op::Rename(a, x, b, y) => {
                let (sd, dd) = (Self::pick(&dirs, a), Self::pick(&dirs, b));
                let Some(&id) = self.entries[&sd].get(NAMES[x]) else { return Err(Error::NotFound) };
                let target = self.entries[&dd].get(NAMES[y]).copied();
                if sd == dd && x == y {
                    return Ok(None);
                }
                let is_dir = self.kind[&id] == FileKind::Dir;
                if is_dir && sd != dd && self.is_within(dd, id) {
                    return Err(Error::InvalidArgument(String::new()));
                }
                if let Some(t) = target {
                    if t == id {
                        return Ok(None);
                    }
                    let tdir = self.kind[&t] == FileKind::Dir;
                    match (is_dir, tdir) {
                        (true, false) => return Err(Error::NotDir),
                        (false, true) => return Err(Error::IsDir),
                        (true, true) if !self.entries[&t].is_empty() => return Err(Error::NotEmpty),
                        _ => {}
                    }
                    self.drop_link(t);
                }
                self.entries.get_mut(&sd).expect("dir").remove(NAMES[x]);
                self.entries.get_mut(&dd).expect("dir").insert(NAMES[y].to_string(), id);
                if is_dir {
                    self.parent.insert(id, dd);
                }
                Ok(None)
            }
            Op::Link(f, d, x) => {
                let files = self.files();
                if files.is_empty() {
                    return Ok(None);
                }
                let id = Self::pick(&files, f);
                let dir = Self::pick(&dirs, d);
                if self.entries[&dir].contains_key(NAMES[x]) {
                    return Err(Error::Exists);
                }
                self.entries.get_mut(&dir).expect("dir").insert(NAMES[x].to_string(), id);
                *self.nlink.get_mut(&id).expect("live") += 1;
                Ok(None)
            }
        }
    }
}

async fn run_real(ns: &Namespace, m: &Model, dirs: &[u64], files: &[u64], op: &Op, rid: Option<ReqId>) -> Result<Option<InodeId>, Error> {
    let r = |id: u64| m.real[&id];
    let once = ns.once(rid).await?;
    let once = &once;
    let root = Cred::root();
    match *op {
        Op::Create(d, x) => ns.create(r(Model::pick(dirs, d)), NAMES[x], 0o644, &root, true, once).await.map(|c| Some(c.attr.ino)),
        Op::Mkdir(d, x) => ns.mkdir(r(Model::pick(dirs, d)), NAMES[x], 0o755, &root, once).await.map(|a| Some(a.ino)),
        Op::Unlink(d, x) => ns.unlink(r(Model::pick(dirs, d)), NAMES[x], &root, once).await.map(|_| None),
        Op::Rmdir(d, x) => ns.rmdir(r(Model::pick(dirs, d)), NAMES[x], &root, once).await.map(|_| None),
        Op::Rename(a, x, b, y) => ns
            .rename(r(Model::pick(dirs, a)), NAMES[x], r(Model::pick(dirs, b)), NAMES[y], 0, &root, once)
            .await
            .map(|_| None),
        Op::Link(f, d, x) => {
            if files.is_empty() {
                return Ok(None);
            }
            ns.link(r(Model::pick(files, f)), r(Model::pick(dirs, d)), NAMES[x], &root, false, once).await.map(|_| None)
        }
    }
}

/// The real tree must equal the model: names, kinds, inode identity, links.
async fn compare(ns: &Namespace, m: &Model) {
    for (dir, entries) in &m.entries {
        let (got, _, _) = ns.readdir(m.real[dir], 0, 4096, &Cred::root()).await.expect("readdir");
        let got: BTreeMap<String, InodeId> = got.into_iter().map(|e| (e.name, e.ino)).collect();
        let want: BTreeMap<String, InodeId> = entries.iter().map(|(n, id)| (n.clone(), m.real[id])).collect();
        assert_eq!(got, want, "entries of model dir {dir}");
        let a = ns.getattr(m.real[dir]).await.expect("dir attr");
        let subdirs = entries.values().filter(|id| m.kind[id] == FileKind::Dir).count() as u32;
        assert_eq!(a.nlink, 2 + subdirs, "link count of model dir {dir}");
    }
    for (id, n) in &m.nlink {
        if m.kind[id] == FileKind::File {
            assert_eq!(ns.getattr(m.real[id]).await.expect("file attr").nlink, *n, "links of model file {id}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    /// Every operation carries a request id; those picked by `retried` are
    /// sent again as a retry after they were applied (a lost reply): the
    /// retry gets the same answer, and the tree still matches the model,
    /// so nothing was applied twice.
    fn namespace_matches_model(ops in proptest::collection::vec(op(), 1..40), retried in any::<u64>()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let cluster = Arc::new(Cluster::new(Duration::from_secs(60), Duration::from_secs(60)));
            cluster.osds.heartbeat(1, "127.0.0.1:1", &aifs_common::proto::mds::OsdUsage { capacity: 1 << 40, ..Default::default() });
            let ns = Namespace::open(dir.path(), 4, LayoutPolicy { stripe_count: 1, ..LayoutPolicy::default() }, cluster).await.unwrap();
            let mut m = Model::new();
            for (seq, op) in ops.iter().enumerate() {
                let dirs = m.dirs();
                let files = m.files();
                let seq = seq as u64 + 1;
                let rid = ReqId { client: 42, seq, oldest: seq, retry: false };
                let real = run_real(&ns, &m, &dirs, &files, op, Some(rid)).await;
                if real.is_ok() && retried & (1 << (seq % 64)) != 0 {
                    let again = run_real(&ns, &m, &dirs, &files, op, Some(ReqId { retry: true, ..rid })).await;
                    assert_eq!(again, real, "{op:?}: a retry was answered differently");
                }
                let want = m.apply(op);
                match (&want, &real) {
                    (Ok(Some((id, _))), Ok(Some(ino))) => {
                        m.real.insert(*id, *ino);
                    }
                    (Ok(_), Ok(_)) => {}
                    (Err(a), Err(b)) => assert_eq!(errno(a), errno(b), "{op:?}: model {a:?}, real {b:?}"),
                    _ => panic!("{op:?}: model {want:?}, real {real:?}"),
                }
                compare(&ns, &m).await;
            }
        });
    }
}
