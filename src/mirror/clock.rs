//! The clock seam: the time that records, access coalescing and retention see, so that unit
//! tests can set it.

use chrono::{DateTime, Utc};

/// Where the mirror reads the time.
pub(crate) trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
