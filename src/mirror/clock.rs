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

/// A clock that only moves when told to (for tests).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct TestClock(std::sync::Mutex<DateTime<Utc>>);

#[cfg(test)]
impl TestClock {
    /// A clock standing at `at`.
    pub(crate) fn at(at: DateTime<Utc>) -> Self {
        Self(std::sync::Mutex::new(at))
    }

    /// Moves the clock forward by `by`.
    pub(crate) fn advance(&self, by: chrono::TimeDelta) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) += by;
    }
}

#[cfg(test)]
impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
