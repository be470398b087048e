//! The database's clock. Hosts sharing a database may disagree about the time; leases and due
//! times written by one host are read by the others, so every time the store writes or
//! compares is the database's. Each host measures the offset between its clock and the
//! database's when it opens the store, and converts at the boundary: times coming in through
//! the [`Store`](crate::store::Store) trait are the host's, times stored are the database's.

use crate::store::now_ms;

#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    /// The database's clock minus this host's.
    offset_ms: i64,
    /// Added to this host's clock: only tests set it, to play a host whose clock is wrong.
    host_skew_ms: i64,
}

impl Clock {
    /// Measures the offset on `client` (half the round trip is the error bound).
    pub async fn measure(client: &tokio_postgres::Client, host_skew_ms: i64) -> anyhow::Result<Clock> {
        let host_now = || now_ms() + host_skew_ms;
        let before = host_now();
        let database: i64 =
            client.query_one("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint", &[]).await?.get(0);
        let after = host_now();
        Ok(Clock { offset_ms: database - (before + after) / 2, host_skew_ms })
    }

    /// Now, on the database's clock.
    pub fn now(self) -> i64 {
        now_ms() + self.host_skew_ms + self.offset_ms
    }

    /// A time on this host's clock, on the database's.
    pub fn to_database(self, host_ms: i64) -> i64 {
        host_ms + self.offset_ms
    }

    /// A time on the database's clock, on this host's.
    pub fn to_host(self, database_ms: i64) -> i64 {
        database_ms - self.offset_ms
    }
}
