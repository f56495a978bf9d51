//! The MDS's recalls: serving them on this client's connection,
//! flushing and dropping what they name, and telling the kernel.
use super::*;

/// Serves the MDS's recalls on this client's connection.
pub(super) struct RecallService {
    pub(super) fs: Weak<ClientFs>,
}

impl Service for RecallService {
    type Req = RecallReq;
    type Resp = RecallResp;

    async fn call(&self, _peer: &Arc<Peer>, req: RecallReq, _payload: Bytes) -> (RecallResp, Vec<Bytes>) {
        let Some(fs) = self.fs.upgrade() else {
            return (RecallResp::Done, vec![]);
        };
        match fs.on_recall(req).await {
            Ok(r) => (r, vec![]),
            Err(e) => (RecallResp::Err(e.to_wire()), vec![]),
        }
    }

    fn error(e: Error) -> RecallResp {
        RecallResp::Err(e.to_wire())
    }

    fn accepts(&self, role: Role) -> bool {
        role == Role::Mds
    }
}
impl ClientFs {
    /// Serve recalls arriving on `conn`, a connection of its own rather
    /// than one of the MDS pool's (the fuzzer's, acting as the MDS).
    pub fn serve_recalls(self: &Arc<Self>, conn: quinn::Connection) {
        let svc = Arc::new(RecallService { fs: Arc::downgrade(self) });
        tokio::spawn(rpc::serve_conn(svc, Peer::new(Role::Mds, conn)));
    }

    /// The MDS recalls or invalidates something this client caches.
    pub async fn on_recall(&self, req: RecallReq) -> Result<RecallResp> {
        match req {
            RecallReq::Invalidate { ino, names } => {
                // Under a shared-write lease another writer published: the
                // kernel's pages of the file may be old.
                let pages = self.meta.mode(ino) == LeaseMode::SharedWrite;
                self.meta.invalidate(ino, &names);
                if let Some(f) = self.files.get(&ino).map(|f| f.clone()) {
                    f.forget_cached();
                }
                if names.is_empty() {
                    // Its default layout may have changed.
                    self.dirops.forget_reserved(ino);
                }
                self.tell_kernel(ino, names, pages).await;
                Ok(RecallResp::Done)
            }
            RecallReq::Allocated { ino, bytes } => {
                // The kernel asks again, and is answered from the cache.
                self.meta.set_allocated(ino, bytes);
                self.forget_kernel_attrs(ino);
                Ok(RecallResp::Done)
            }
            RecallReq::Degraded { ino, objs } => {
                if let Some(f) = self.files.get(&ino) {
                    f.add_stale(&objs);
                }
                Ok(RecallResp::Done)
            }
            RecallReq::Revoke { ino } if self.dirops.writable(ino) || self.meta.knows_dir(ino) => {
                // A directory: the changes made here under its write lease
                // go first; what is cached of it stays right, under the
                // read lease the MDS leaves this client.
                self.meta.demoted(ino);
                if let Some(n) = self.dirops.revoke(ino) {
                    self.dirops.wait(n).await;
                }
                Ok(RecallResp::Demoted)
            }
            RecallReq::Revoke { ino } => {
                let f = self.files.get(&ino).map(|f| f.clone());
                let mut res = Ok(());
                match f {
                    Some(f) => {
                        {
                            // No write buffers after this without a new lease.
                            let _g = f.gate.write().await;
                            self.meta.drop_ino(ino);
                        }
                        res = self.publish(&f, Others::Wait).await;
                        f.recalled.store(true, Ordering::Release);
                        f.forget_cached();
                    }
                    None => self.meta.drop_ino(ino),
                }
                self.tell_kernel(ino, Vec::new(), true).await;
                res.map(|_| RecallResp::Done)
            }
        }
    }

    pub(super) async fn tell_kernel(&self, ino: InodeId, names: Vec<String>, data: bool) {
        let Some(k) = self.kernel.get().cloned() else {
            return;
        };
        let job = tokio::task::spawn_blocking(move || {
            for n in &names {
                k.forget_entry(ino, n);
            }
            k.forget_inode(ino, data);
        });
        if tokio::time::timeout(KERNEL_NOTICE_WAIT, job).await.is_err() {
            tracing::debug!(%ino, "kernel notice still pending; answering the recall");
        }
    }
}
