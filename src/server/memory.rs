//! The webhook memory budget: bytes of webhook bodies held in memory at once.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Error;

/// Bytes of webhook bodies that may be held in memory at once.
#[derive(Debug)]
pub struct MemoryBudget {
    bytes: Arc<Semaphore>,
}

/// Part of the budget, returned when dropped (after the event is committed).
#[derive(Debug)]
pub struct Reservation {
    _permit: Option<OwnedSemaphorePermit>,
}

impl From<Option<OwnedSemaphorePermit>> for Reservation {
    fn from(permit: Option<OwnedSemaphorePermit>) -> Self {
        Self { _permit: permit }
    }
}

impl MemoryBudget {
    pub fn new(bytes: usize) -> Self {
        Self {
            bytes: Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))),
        }
    }

    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    pub fn reserve(&self, bytes: usize) -> Result<OwnedSemaphorePermit, Error> {
        u32::try_from(bytes)
            .ok()
            .and_then(|n| self.bytes.clone().try_acquire_many_owned(n).ok())
            .ok_or_else(|| {
                Error::Unavailable(
                    "too many webhook bodies are being received; retry shortly".into(),
                )
            })
    }
}
