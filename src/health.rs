//! What readiness knows beyond "the database answers a ping": whether writes
//! are failing. A full disk lets `select 1` through while every commit fails.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{self, Error};

/// How long after a storage failure readiness stays 503 unless a commit
/// succeeds first. Past it, the replica takes traffic again, which is how it
/// finds out whether storage is back.
const STORAGE_COOL_DOWN: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct StorageHealth {
    last_failure: Mutex<Option<Instant>>,
}

impl StorageHealth {
    /// Records an ingest's outcome.
    pub fn record<T>(&self, outcome: &Result<T, Error>) {
        let mut last_failure = self.last_failure.lock().expect("not poisoned");
        match outcome {
            Ok(_) => {
                if last_failure.take().is_some() {
                    tracing::warn!("ingest commits succeed again");
                }
            }
            Err(error) if error::storage_failure(error) => {
                if last_failure.is_none() {
                    tracing::error!(
                        %error,
                        "ingest commits fail for a storage reason: not ready"
                    );
                }
                *last_failure = Some(Instant::now());
            }
            Err(_) => {}
        }
    }

    /// Whether recent commits failed for a storage reason and none succeeded since.
    pub fn failing(&self) -> bool {
        self.last_failure
            .lock()
            .expect("not poisoned")
            .is_some_and(|at| at.elapsed() < STORAGE_COOL_DOWN)
    }
}
