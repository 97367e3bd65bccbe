//! Delivery lanes: one per repository, each delivering its events strictly in
//! stream order, all of them at once up to a bound. A slow or failing target
//! path of one repository no longer holds back the others, and a fast target
//! gets several requests in flight.
//!
//! - **Order.** A lane delivers one event at a time, in the order the stream
//!   sent them, so each repository's events reach the target in id order.
//! - **Bounds.** At most `concurrency` deliveries are in flight over all lanes
//!   (a semaphore), and each lane queues at most `LANE_QUEUE` events: when one
//!   is full, the stream is not read further, which is backpressure to the
//!   server.
//! - **End of a stream.** Before a reconnect, every lane finishes what it was
//!   given, so the acks the next stream resumes from cover everything
//!   delivered. After SIGTERM, no lane starts a new delivery; the ones in
//!   flight finish and are acked.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::deliver::Deliverer;
use hookrelay_proto::Event;

/// Events queued per lane beyond the one being delivered.
const LANE_QUEUE: usize = 64;

pub(crate) struct Lanes {
    deliverer: Arc<Deliverer>,
    permits: Arc<Semaphore>,
    lanes: HashMap<String, mpsc::Sender<Event>>,
    running: JoinSet<()>,
}

impl Lanes {
    pub(crate) fn new(deliverer: Arc<Deliverer>, concurrency: usize) -> Self {
        Self {
            deliverer,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            lanes: HashMap::new(),
            running: JoinSet::new(),
        }
    }

    /// Queues `event` on its repository's lane; waits while that lane is full.
    /// False once the agent is shutting down.
    pub(crate) async fn push(&mut self, event: Event) -> bool {
        self.deliverer.metrics.received(&event);
        let lane = match self.lanes.get(&event.repository_id) {
            Some(lane) if !lane.is_closed() => lane.clone(),
            _ => {
                let (sender, receiver) = mpsc::channel(LANE_QUEUE);
                self.running.spawn(run_lane(
                    receiver,
                    self.deliverer.clone(),
                    self.permits.clone(),
                ));
                self.lanes
                    .insert(event.repository_id.clone(), sender.clone());
                sender
            }
        };
        tokio::select! {
            biased;
            () = self.deliverer.shutdown.cancelled() => false,
            sent = lane.send(event) => sent.is_ok(),
        }
    }

    /// Lets every lane deliver what it was given, then returns.
    pub(crate) async fn finish(mut self) {
        self.lanes.clear();
        while self.running.join_next().await.is_some() {}
    }
}

async fn run_lane(
    mut events: mpsc::Receiver<Event>,
    deliverer: Arc<Deliverer>,
    permits: Arc<Semaphore>,
) {
    while let Some(event) = events.recv().await {
        if deliverer.shutdown.is_cancelled() {
            return;
        }
        let Ok(_permit) = permits.acquire().await else {
            return;
        };
        if !deliverer.deliver(event).await {
            return;
        }
    }
}
