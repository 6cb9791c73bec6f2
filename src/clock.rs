//! Time comes only from here, so tests can pin it.

use time::OffsetDateTime;

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> OffsetDateTime;

    /// Unix seconds, the store's unit.
    fn unix(&self) -> i64 {
        self.now().unix_timestamp()
    }
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// Unix seconds to a timestamp; out-of-range values clamp to the epoch.
pub fn from_unix(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Unix seconds as RFC 3339 (`2026-12-02T06:50:07Z`), as the CLI, the logs and webhooks show
/// times; the number itself if it cannot be formatted.
pub fn rfc3339(secs: i64) -> String {
    from_unix(secs).format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| secs.to_string())
}
