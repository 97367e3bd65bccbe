//! Wake-ups: a server's own commits wake its streams at once; a NOTIFY after
//! the commit tells the other servers; one LISTEN connection per server
//! receives theirs (and the control signals), with a backstop re-read.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::StreamHub;
use super::tail::{CommittedBatch, Handover, HeldBack};
use crate::domain::Horizon;
use crate::store;
use crate::store::consumer::{CONTROL_CHANNEL, Signal};
use crate::store::event::NOTIFY_CHANNEL;

/// How often a server looks for open streams on the other servers, to know
/// whether its commits need announcing.
const ANNOUNCE_CHECK: Duration = Duration::from_secs(1);

/// How often the listener checks that no commit went by without a wake-up.
const BACKSTOP: Duration = Duration::from_secs(1);

/// Until when no other server is known to hold an open stream: `announce`
/// sends nothing then, and commits do not wake it.
#[derive(Debug, Default)]
pub(super) struct OthersQuiet(std::sync::Mutex<Option<Instant>>);

impl OthersQuiet {
    fn now(&self) -> bool {
        self.0
            .lock()
            .expect("not poisoned")
            .is_some_and(|until| until > Instant::now())
    }

    fn until(&self, until: Option<Instant>) {
        *self.0.lock().expect("not poisoned") = until;
    }
}

impl StreamHub {
    /// Changes whenever events may have committed.
    pub fn subscribe(&self) -> watch::Receiver<Horizon> {
        self.latest.subscribe()
    }

    /// This server has committed events: its streams get them now, straight
    /// from the batch when nothing can come before them (`hand_over`), else
    /// from the listener's read; the other servers' streams by `announce`.
    pub fn committed(&self, batch: Option<CommittedBatch<'_>>) {
        match self.hand_over(batch) {
            Handover::Appended(high) => self.publish(high),
            // No stream here to read for: wake the watches, which read on
            // from the database.
            Handover::Resting => self.latest.send_modify(|_| {}),
            Handover::Read => self.local_commits.notify_one(),
        }
        // While no other server is known to hold a stream, `announce` would
        // send nothing: not even woken.
        if !self.others_quiet.now() {
            self.to_announce.notify_one();
        }
    }

    /// Wakes the streams and watches waiting below `high`, the tail's new end.
    pub(super) fn publish(&self, high: Horizon) {
        self.latest.send_if_modified(|latest| {
            let newer = high > *latest;
            *latest = (*latest).max(high);
            newer
        });
    }

    /// Tells the other servers, after this one's commits, that events
    /// committed, until `stop`. At most one NOTIFY is in flight; commits
    /// meanwhile share the next. It commits asynchronously (a lost wake-up is
    /// caught by the backstop), so it never waits for a WAL flush or a standby.
    /// Nothing is sent while no other server holds an open stream (checked at
    /// most every `ANNOUNCE_CHECK`): a NOTIFY is a small transaction of its
    /// own. A stream opened meanwhile elsewhere, and watches (which keep no
    /// row), get those events from the backstop, within a second.
    pub async fn announce(self: Arc<Self>, pool: PgPool, stop: CancellationToken) {
        let server = self.server_id.to_string();
        let mut others: Option<(bool, Instant)> = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.to_announce.notified() => {}
            }
            if others.is_none_or(|(_, at)| at.elapsed() >= ANNOUNCE_CHECK) {
                let streaming = store::consumer::streams_elsewhere(&pool, self.server_id)
                    .await
                    .unwrap_or(true);
                let now = Instant::now();
                others = Some((streaming, now));
                self.others_quiet
                    .until((!streaming).then_some(now + ANNOUNCE_CHECK));
            }
            if others.is_some_and(|(streaming, _)| !streaming) {
                continue;
            }
            let sent = sqlx::query(
                "select set_config('synchronous_commit', 'off', true), pg_notify($1, $2)",
            )
            .bind(NOTIFY_CHANNEL)
            .bind(&server)
            .execute(&pool)
            .await;
            if let Err(error) = sent {
                tracing::warn!(%error, "cannot announce committed events to the other servers");
            }
        }
    }

    /// Acts on one notification; true when it asks for a re-read (events
    /// committed on another server).
    fn take(&self, notification: &sqlx::postgres::PgNotification, own: &str) -> bool {
        if notification.channel() == CONTROL_CHANNEL {
            match serde_json::from_str::<Signal>(notification.payload()) {
                Ok(signal) => self.dispatch(Some(signal)),
                Err(error) => tracing::warn!(%error, "ignoring a malformed control signal"),
            }
            false
        } else {
            notification.payload() != own
        }
    }

    /// Keeps the tail and the published horizon up to date, until `stop`.
    pub async fn listen(self: Arc<Self>, pool: PgPool, stop: CancellationToken) {
        let own = self.server_id.to_string();
        let protocol = |e: crate::error::Error| sqlx::Error::Protocol(e.to_string());
        loop {
            let connected = async {
                let mut listener = PgListener::connect_with(&pool).await?;
                listener
                    .listen_all([NOTIFY_CHANNEL, CONTROL_CHANNEL])
                    .await?;
                // Signals sent while the listener was away are lost: every
                // stream looks for pending redeliveries once.
                self.dispatch(None);
                // Anything committed before LISTEN took effect lies below this
                // horizon: streams read it from the database.
                let horizon = store::event::horizon(&pool).await.map_err(protocol)?;
                self.reset_tail(Some(horizon));
                self.latest
                    .send_modify(|latest| *latest = (*latest).max(horizon));
                let mut backstop = tokio::time::interval(BACKSTOP);
                let mut held = HeldBack::default();
                loop {
                    let wake = tokio::select! {
                        // `recv` would reconnect silently, losing wake-ups
                        // without the tail knowing; end and start over instead.
                        notification = listener.try_recv() => {
                            let notification = notification?.ok_or_else(|| {
                                sqlx::Error::Protocol("the LISTEN connection was lost".into())
                            })?;
                            // Coalesce a burst of wake-ups into one read.
                            let mut wake = self.take(&notification, &own);
                            while let Some(notification) = listener.next_buffered() {
                                wake |= self.take(&notification, &own);
                            }
                            wake
                        }
                        () = self.local_commits.notified() => true,
                        // A backstop, not the delivery path.
                        _ = backstop.tick() => true,
                        () = held.wait() => true,
                    };
                    if !wake {
                        continue;
                    }
                    match self.extend_tail(&mut listener).await.map_err(protocol)? {
                        (Some(high), held_back) => {
                            held.update(&pool, high, held_back).await;
                            self.publish(high);
                        }
                        // No stream here: wake the watches, which read on
                        // from the database.
                        (None, _) => {
                            held = HeldBack::default();
                            self.latest.send_modify(|_| {});
                        }
                    }
                }
                #[allow(unreachable_code)]
                Ok::<(), sqlx::Error>(())
            };
            tokio::select! {
                () = stop.cancelled() => return,
                result = connected => {
                    if let Err(error) = result {
                        tracing::warn!(%error, "event listener lost its connection; reconnecting");
                        // Until it is back, streams read from the database.
                        self.reset_tail(None);
                        self.latest.send_modify(|_| {});
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}
