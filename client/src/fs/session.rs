//! The session: connecting, opening it (again after an MDS restart),
//! heartbeats, and closing it at unmount.
use super::*;
use super::recall::RecallService;
use crate::route::SessionKeeper;

impl ClientFs {
    /// Connect to the cluster (QUIC + mTLS) and open a session.
    pub async fn connect(cfg: &ClientConfig) -> Result<Arc<ClientFs>> {
        let fs = Self::new(cfg)?;
        // Every connection to the MDS carries its recalls back to us; a new
        // one (after a reconnect) gets the session bound by a heartbeat.
        let weak = Arc::downgrade(&fs);
        fs.pool.mds.on_connect(Box::new(move |conn| {
            if let Some(fs) = weak.upgrade() {
                fs.serve_mds_conn(conn);
            }
        }));
        let keeper: std::sync::Weak<dyn SessionKeeper> = Arc::downgrade(&fs) as _;
        let _ = fs.pool.routes.keeper.set(keeper);
        tokio::spawn(Self::flush_in_background(Arc::downgrade(&fs)));
        tokio::spawn(Self::send_dirops(Arc::downgrade(&fs)));
        let hb = fs.open_session().await?;
        fs.pool.refresh_osds().await?;
        fs.pool.learn_shards().await;
        tokio::spawn(Self::heartbeat(Arc::downgrade(&fs), hb));
        Ok(fs)
    }

    /// The client's state for `cfg`, with its endpoint and connections
    /// to the MDS made, before any session.
    fn new(cfg: &ClientConfig) -> Result<Arc<ClientFs>> {
        let id = Identity::load(&cfg.tls)?;
        let endpoint = rpc::client_endpoint(&id, &cfg.transport)?;
        let mds = aifs_common::rpc::RpcClient::of_members(endpoint.clone(), &cfg.mds, &id, &cfg.transport)?;
        let pool = Arc::new(Pool::new(endpoint, mds, Duration::from_secs(cfg.mds_retry_secs)));
        let _ = pool.routes.config.set(aifs_common::rpc::endpoint::member_client_config(&id, &cfg.transport)?);
        let budget_kib = (cfg.write_budget_mb.max(16) * 1024).min(Semaphore::MAX_PERMITS);
        let dirops = Arc::new(DirOps::default());
        let metrics = crate::metrics::ClientMetrics::new();
        let ctx = Arc::new(DataCtx {
            pool: pool.clone(),
            dirops: dirops.clone(),
            budget: Arc::new(Semaphore::new(budget_kib)),
            budget_kib,
            write_window: cfg.write_window,
            max_buffered_units: cfg.max_buffered_units,
            readahead_units: cfg.readahead_units,
            pressure: tokio::sync::Notify::new(),
            metrics: metrics.clone(),
        });
        Ok(Arc::new(ClientFs {
            pool,
            ctx,
            files: DashMap::new(),
            handles: DashMap::new(),
            next_fh: AtomicU64::new(1),
            name: cfg.name.clone(),
            meta: MetaCache::new(),
            lease_cache: cfg.lease_cache,
            dir_leases: cfg.dir_leases && cfg.lease_cache,
            term_ms: AtomicU64::new(0),
            root_squash: Default::default(),
            kernel: OnceLock::new(),
            rebind: Notify::new(),
            lockers: DashMap::new(),
            held_locks: Default::default(),
            dirops,
            statahead: Default::default(),
            metrics,
        }))
    }

    /// Background flusher: partial units do not sit in memory forever,
    /// and all of them go when a writer runs out of budget.
    async fn flush_in_background(weak: Weak<ClientFs>) {
        loop {
            let Some(ctx) = weak.upgrade().map(|fs| fs.ctx.clone()) else {
                return;
            };
            let older_than = tokio::select! {
                _ = tokio::time::sleep(FLUSH_TICK) => Some(STALE_UNIT),
                _ = ctx.pressure.notified() => None,
            };
            let Some(fs) = weak.upgrade() else { return };
            fs.dirops.give_back_idle(IDLE_RESERVED);
            let files: Vec<Arc<FileState>> = fs.files.iter().map(|f| f.value().clone()).collect();
            for f in files {
                if let Err(e) = f.ship_buffered(&fs.ctx, older_than) {
                    tracing::warn!(ino = %f.ino, error = %e, "background flush failed");
                }
            }
        }
    }

    /// The session's heartbeat every `hb_ms` (or when a reconnect asks
    /// for one): a session the MDS no longer knows is opened again, and
    /// the processes that lead shards and the members are learned.
    async fn heartbeat(weak: Weak<ClientFs>, hb_ms: u64) {
        let period = Duration::from_millis(hb_ms.clamp(200, 10_000));
        let mut learned = None;
        loop {
            let Some(fs) = weak.upgrade() else { return };
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = fs.rebind.notified() => {}
            }
            let Some(id) = fs.meta.session() else {
                let _ = fs.open_session().await;
                continue;
            };
            let sent = Instant::now();
            match fs.pool.mds(&MdsReq::SessionHeartbeat { id, io: fs.metrics.io() }).await {
                Ok(_) => fs.meta.renewed(sent, fs.term()),
                Err(Error::Stale) => {
                    tracing::info!("session unknown to the MDS (restart, expiry or eviction); opening a new one");
                    fs.meta.clear();
                    fs.dirops.lost_leases();
                    let _ = fs.open_session().await;
                }
                Err(e) => tracing::warn!(error = %e, "session heartbeat failed"),
            }
            fs.pool.beat_procs(fs.metrics.io()).await;
            fs.pool.learn_shards().await;
            aifs_common::rpc::leader::learn_members_when_due(&fs.pool.mds, &mut learned).await;
        }
    }

    /// Where to send kernel cache notices (set once the FUSE session is up).
    pub fn set_kernel(&self, k: Arc<dyn KernelCache>) {
        let _ = self.kernel.set(k);
    }

    /// Who the caller of the request being served is, as the MDS will
    /// see it (root squashed if this node's is): for what the client
    /// answers itself.
    pub(super) fn caller(&self) -> aifs_common::perm::Cred {
        let c = crate::cred::current();
        match self.root_squash.lock().ok().and_then(|s| *s) {
            Some((uid, gid)) => c.squash(uid, gid),
            None => c,
        }
    }

    pub(super) fn term(&self) -> Duration {
        Duration::from_millis(self.term_ms.load(Ordering::Relaxed))
    }

    /// Open a session; returns the heartbeat period in ms. The MDS asks for
    /// four heartbeats per term. A new session after the last one was lost
    /// (an MDS restart, an expiry) names the old one, which a restarted MDS
    /// waits for, and counts again the files this client has open.
    /// The request that opens a session naming `previous`, with the files
    /// this client has open and the locks it holds (each process takes
    /// those of the shards it leads).
    fn session_request(&self, previous: Vec<SessionId>) -> MdsReq {
        let open: Vec<InodeId> = self.files.iter().filter(|f| f.opens.load(Ordering::Acquire) > 0).map(|f| f.ino).collect();
        let locks: Vec<HeldLock> = match self.held_locks.lock() {
            Ok(t) => t.all().into_iter().map(|(ino, l)| HeldLock { ino, owner: l.owner, start: l.start, end: l.end, write: l.write, pid: l.pid }).collect(),
            Err(_) => Vec::new(),
        };
        MdsReq::OpenSession { name: self.name.clone(), dir_leases: self.dir_leases, previous, open, locks }
    }

    /// A new connection to an MDS process: its recalls are served, and
    /// the session bound to it by the next heartbeat.
    fn serve_mds_conn(self: &Arc<Self>, conn: quinn::Connection) {
        let svc = Arc::new(RecallService { fs: Arc::downgrade(self) });
        tokio::spawn(rpc::serve_conn(svc, Peer::new(Role::Mds, conn)));
        self.rebind.notify_one();
    }

    pub(super) async fn open_session(&self) -> Result<u64> {
        let sent = Instant::now();
        let n_locks = self.held_locks.lock().map(|t| t.all().len()).unwrap_or(0);
        let req = self.open_request(self.pool.routes.former());
        match self.pool.mds(&req).await? {
            MdsResp::Session { id, heartbeat_ms, reclaimed, root_squash } => {
                if let Ok(mut s) = self.root_squash.lock() {
                    *s = root_squash;
                }
                if n_locks > 0 && !reclaimed {
                    // The session ended at the MDS (expired, evicted):
                    // its locks went with it, and may be others' now.
                    tracing::error!(locks = n_locks, "the session was lost and the locks it held with it");
                    if let Ok(mut t) = self.held_locks.lock() {
                        t.clear();
                    }
                }
                self.term_ms.store(heartbeat_ms * 4, Ordering::Relaxed);
                if let Some(old) = self.meta.session().filter(|old| *old != id) {
                    self.pool.routes.remember(old);
                }
                self.meta.set_session(id, sent, self.term());
                Ok(heartbeat_ms)
            }
            _ => Err(unexpected("OpenSession")),
        }
    }

    /// Flush everything and close the session (unmount).
    pub async fn shutdown(&self) {
        let files: Vec<Arc<FileState>> = self.files.iter().map(|f| f.value().clone()).collect();
        for f in files {
            if let Err(e) = self.flush_file(&f, Others::Wait).await {
                tracing::warn!(ino = %f.ino, error = %e, "flush at unmount failed");
            }
        }
        if tokio::time::timeout(Duration::from_secs(30), self.dirops.barrier()).await.is_err() {
            tracing::error!("changes made under directory leases were not all applied before the unmount");
        }
        let id = self.meta.session();
        self.meta.clear();
        self.dirops.lost_leases();
        self.pool.close_procs().await;
        // An MDS that is gone must not hold up the unmount.
        if let Some(id) = id {
            let req = MdsReq::CloseSession { id };
            if tokio::time::timeout(Duration::from_secs(2), self.pool.mds(&req)).await.is_err() {
                tracing::warn!("MDS did not answer the session close; its session will expire");
            }
        }
        self.pool.mds.close();
    }
}

impl SessionKeeper for ClientFs {
    /// Names every session this client has as well as `previous`: the
    /// process it goes to may have led the shards of any of them.
    fn open_request(&self, previous: Vec<SessionId>) -> MdsReq {
        let previous = previous.into_iter().chain(self.meta.session()).chain(self.meta.others()).collect();
        self.session_request(previous)
    }

    fn opened(&self, id: SessionId, sent: Instant) {
        self.meta.add_other(id, sent, self.term());
    }

    fn renewed(&self, id: SessionId, sent: Instant) {
        self.meta.renew_other(id, sent, self.term());
    }

    fn lost(&self, id: SessionId) {
        self.meta.drop_other(id);
        self.dirops.lost_leases();
    }

    fn connected(self: Arc<Self>, conn: quinn::Connection) {
        self.serve_mds_conn(conn);
    }
}
