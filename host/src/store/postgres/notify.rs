//! Wake-ups between hosts sharing a database: `NOTIFY` on one channel with tiny payloads
//! (`<change> <sender>`), and one `LISTEN`ing connection per host. Announcements are
//! coalesced (a burst of them is one notification per kind of change), and none of this is
//! needed for correctness: hosts also poll, so a lost notification only delays a change.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{Notify, mpsc};
use tokio_postgres::AsyncMessage;

use crate::store::{Change, ChangeSignals};

const CHANNEL: &str = "hookwasm";
/// Announcements within this window go out as one notification.
const COALESCE: Duration = Duration::from_millis(5);
/// Wait before reconnecting a listener whose connection failed.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

fn name(change: Change) -> &'static str {
    match change {
        Change::Queue => "queue",
        Change::Webhooks => "webhooks",
        Change::Plugins => "plugins",
    }
}

/// Sends this store's announcements.
pub struct Announcer {
    /// Pending per kind of change, in [`Change`] order.
    pending: [AtomicBool; 3],
    kick: Notify,
}

impl Announcer {
    /// Starts the task that sends announcements as `sender` over connections from `pool`.
    pub fn start(pool: Pool, sender: String) -> Arc<Announcer> {
        let announcer = Arc::new(Announcer { pending: Default::default(), kick: Notify::new() });
        tokio::spawn(announcer.clone().send_loop(pool, sender));
        announcer
    }

    pub fn announce(&self, change: Change) {
        self.pending[change as usize].store(true, Ordering::Release);
        self.kick.notify_one();
    }

    async fn send_loop(self: Arc<Self>, pool: Pool, sender: String) {
        loop {
            self.kick.notified().await;
            tokio::time::sleep(COALESCE).await;
            for change in [Change::Queue, Change::Webhooks, Change::Plugins] {
                if !self.pending[change as usize].swap(false, Ordering::AcqRel) {
                    continue;
                }
                let payload = format!("{} {sender}", name(change));
                let sent = match pool.get().await {
                    Ok(client) => client.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload]).await.map(|_| ()),
                    Err(error) => {
                        tracing::debug!(%error, "no connection to announce a change; other hosts will poll");
                        continue;
                    }
                };
                if let Err(error) = sent {
                    tracing::debug!(%error, "announcing a change failed; other hosts will poll");
                }
            }
        }
    }
}

/// Starts listening on its own connection (reconnecting after failures) and returns the
/// signals it raises for changes announced by any sender but `own`.
pub fn listen(config: tokio_postgres::Config, own: String) -> ChangeSignals {
    let signals = ChangeSignals::default();
    tokio::spawn(listen_loop(config, own, signals.clone()));
    signals
}

async fn listen_loop(config: tokio_postgres::Config, own: String, signals: ChangeSignals) {
    // Warned once per outage, not once per second while the database is away.
    let warned = AtomicBool::new(false);
    loop {
        if let Err(error) = listen_once(&config, &own, &signals, &warned).await
            && !warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(error = format!("{error:#}"), "not hearing from other hosts; polling until reconnected");
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

/// One listening connection, until it fails.
async fn listen_once(
    config: &tokio_postgres::Config,
    own: &str,
    signals: &ChangeSignals,
    warned: &AtomicBool,
) -> anyhow::Result<()> {
    let (client, mut connection) = config.connect(tokio_postgres::NoTls).await?;
    let (payloads, mut received) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(notification)) => {
                    let _ = payloads.send(notification.payload().to_string());
                }
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    if warned.swap(false, Ordering::Relaxed) {
        tracing::info!("hearing from other hosts again");
    }
    // Whatever was announced while this host was not listening is seen now.
    signals.queue.notify_one();
    signals.webhooks.notify_one();
    signals.plugins.notify_one();
    while let Some(payload) = received.recv().await {
        let Some((change, sender)) = payload.split_once(' ') else { continue };
        if sender == own {
            continue;
        }
        match change {
            "queue" => signals.queue.notify_one(),
            "webhooks" => signals.webhooks.notify_one(),
            "plugins" => signals.plugins.notify_one(),
            _ => {}
        }
    }
    drop(client);
    driver.await?.map_err(anyhow::Error::from)
}
