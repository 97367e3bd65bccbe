//! The event path on one server: webhooks committed in groups (`ingest`), the
//! open streams and watches (`hub`), the shared tail of new events (`tail`),
//! the wake-ups between servers (`wakeups`), revocation (`revocation`), and
//! the core of one open stream (`stream`).
//!
//! - **A commit's own events.** The statement that appends a batch also says
//!   whether any older transaction was still running and which is the newest
//!   below it with events (`store::event::BatchOrder`). When none was running
//!   and the tail already holds everything up to that newest one, the batch's
//!   events are the next in commit order once it commits: the writer appends
//!   them to the shared tail itself and its streams send them at once, with no
//!   read back. Otherwise the listener reads them, as below.
//! - **Wake-ups.** A server that commits events wakes its own streams at once
//!   (`StreamHub::committed`) and tells the other servers with a NOTIFY sent *after* the
//!   commit, from a connection of its own (`StreamHub::announce`): at most one in flight,
//!   so a burst of commits costs one NOTIFY, and no ingest transaction takes
//!   PostgreSQL's database-wide notification lock. One LISTEN connection per
//!   server receives the other servers' wake-ups, so an event committed on any
//!   replica reaches every stream within milliseconds, with no polling. After
//!   the listener reconnects (wake-ups may have been lost meanwhile) every
//!   stream is woken to re-read, and a backstop re-reads every second.
//! - **A shared tail.** On each wake-up the listener reads the new events of
//!   the tenants with open streams on this server, once, into a bounded
//!   in-memory tail; other tenants' events are not read. A stream whose place
//!   lies inside the tail filters it instead of querying the database, so one
//!   event reaching 10,000 streams costs one query, not 10,000. The tail holds
//!   exactly the committed events of its tenants with transactions in
//!   [low, high), where high is a snapshot horizon (see `crate::store::event`):
//!   reading on from high misses nothing. A tenant's events are held from the
//!   first read after its first stream opened; until then, and for older
//!   places, streams read from the database.
//! - **Held back.** An event can commit while an older transaction is still
//!   running; it is read once that one ends. Until then the listener re-reads
//!   after a few milliseconds (doubling up to `HELD_BACK_MAX`), and it warns
//!   when one transaction holds delivery back for long.
//! - **Revocation.** Every open stream is registered with its client id. A
//!   background check looks up all of them in one query every two seconds and
//!   cancels the streams of deleted clients.
//! - **Signals.** Seeks, redeliveries and deleted consumers reach the open
//!   streams of that consumer on every server through a second NOTIFY channel
//!   (`store::consumer::CONTROL_CHANNEL`), sent by those rare operations only.
//!   If the LISTEN connection drops, every stream looks for pending
//!   redeliveries once it is back; a seek lost that way takes effect when the
//!   agent next reconnects (the cursor is in the database).
//! - **Connected streams** are rows in `consumer_stream`, written when a stream
//!   opens and closes and refreshed by a heartbeat, so every replica's API sees
//!   every replica's streams, and a crashed server's rows go stale.

mod hub;
pub mod ingest;
mod revocation;
pub mod stream;
mod tail;
mod wakeups;

pub use hub::{Signals, StreamHub, StreamRegistration, WatchRegistration};
pub use ingest::Ingestor;
pub use revocation::REVOCATION_CHECK;
pub use tail::CommittedBatch;
