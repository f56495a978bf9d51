//! Bytes in flight at a server, bounded per connection and in all.
//!
//! A request that moves data (an object write's payload, a read's reply)
//! holds its bytes from the moment its header is read until its reply is
//! written out: the payload is read into memory, a read's data waits in
//! memory until the peer takes it. Without a bound one peer could pin
//! gigabytes by opening streams it never reads from. So before reading
//! the payload, the server takes the request's cost (`Service::cost`)
//! from its connection's budget and then from the server's, and gives it
//! back when the reply is out (or the stream fails). A request that would
//! cost more than a connection's share takes the whole share (and as much
//! of the server's), so it waits for the others but never for ever. Streams waiting here hold no data.
//!
//! Permits are 64 KiB units (a tokio semaphore counts in u32).
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const UNIT: u64 = 64 * 1024;

/// A server's budget of bytes in flight, and the size of each
/// connection's share.
pub struct Budget {
    all: Arc<Semaphore>,
    all_units: u32,
    per_conn_units: u32,
}

/// One connection's budget.
pub struct ConnBudget(Arc<Semaphore>, u32);

/// Bytes held by one request: given back on drop.
pub struct Held {
    _conn: Option<OwnedSemaphorePermit>,
    _all: Option<OwnedSemaphorePermit>,
}

fn units(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX).max(1)
}

impl Budget {
    /// At most `all_bytes` in flight in all, `per_conn_bytes` for one
    /// connection (each at least one unit).
    pub fn new(all_bytes: u64, per_conn_bytes: u64) -> Budget {
        let all_units = units(all_bytes).min(Semaphore::MAX_PERMITS as u32);
        let per_conn_units = units(per_conn_bytes).min(all_units);
        Budget { all: Arc::new(Semaphore::new(all_units as usize)), all_units, per_conn_units }
    }

    pub fn for_conn(&self) -> ConnBudget {
        ConnBudget(Arc::new(Semaphore::new(self.per_conn_units as usize)), self.per_conn_units)
    }

    /// Hold `bytes` on `conn` and on the server, waiting while either is
    /// spent. Zero bytes hold nothing.
    pub async fn take(&self, conn: &ConnBudget, bytes: u64) -> Held {
        if bytes == 0 {
            return Held { _conn: None, _all: None };
        }
        // A request holds at most one connection's share.
        let n = units(bytes).min(conn.1);
        // The connection's share first, then the server's: every request
        // takes them in this order, so none waits on one while holding
        // what another before it waits for. The semaphores are never
        // closed, so acquiring cannot fail.
        let conn_permit = conn.0.clone().acquire_many_owned(n).await.ok();
        let all_permit = self.all.clone().acquire_many_owned(n.min(self.all_units)).await.ok();
        Held { _conn: conn_permit, _all: all_permit }
    }

    /// Bytes free now in all (for tests and status).
    pub fn free(&self) -> u64 {
        self.all.available_permits() as u64 * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_connection_waits_for_its_own_bytes_and_others_go_on() {
        let b = Budget::new(4 << 20, 1 << 20);
        let (c1, c2) = (b.for_conn(), b.for_conn());
        let held = b.take(&c1, 1 << 20).await;
        assert_eq!(b.free(), 3 << 20);
        // c1 is spent: its next request waits until the first is done.
        let blocked = tokio::time::timeout(Duration::from_millis(50), b.take(&c1, 64 * 1024)).await;
        assert!(blocked.is_err(), "a connection went past its budget");
        // c2 has its own share.
        let other = tokio::time::timeout(Duration::from_millis(50), b.take(&c2, 1 << 20)).await;
        assert!(other.is_ok());
        drop(held);
        assert!(tokio::time::timeout(Duration::from_millis(50), b.take(&c1, 64 * 1024)).await.is_ok());
    }

    #[tokio::test]
    async fn the_server_total_bounds_all_connections() {
        let b = Budget::new(2 << 20, 1 << 20);
        let conns: Vec<ConnBudget> = (0..3).map(|_| b.for_conn()).collect();
        let _a = b.take(&conns[0], 1 << 20).await;
        let _b = b.take(&conns[1], 1 << 20).await;
        let third = tokio::time::timeout(Duration::from_millis(50), b.take(&conns[2], 1)).await;
        assert!(third.is_err(), "the server went past its budget");
    }

    #[tokio::test]
    async fn a_request_bigger_than_a_budget_takes_all_of_it_and_finishes() {
        let b = Budget::new(2 << 20, 1 << 20);
        let c = b.for_conn();
        let held = tokio::time::timeout(Duration::from_millis(50), b.take(&c, 64 << 20)).await.expect("waited for ever");
        assert_eq!(b.free(), 1 << 20);
        drop(held);
        assert_eq!(b.free(), 2 << 20);
        assert!(b.take(&c, 0).await._conn.is_none());
    }
}
