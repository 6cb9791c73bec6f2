//! The renewal state of a certificate: where it stands against its suggested renewal window
//! (RFC 9773, `ari::window`) and whether something already took its place. Pure: the facts come
//! from the store, the time from the caller.

use std::{fmt, str::FromStr};

use crate::acme::ari;

/// Where a certificate stands, as `vacme certs` and `/metrics` show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RenewalState {
    /// Before its renewal window.
    Active,
    /// Inside its renewal window: the client should renew now.
    Due,
    /// Past the window's end, still valid, and nothing renewed it: the client did not renew.
    Overdue,
    /// A later certificate of the same account for the same names, or one whose order said
    /// `replaces` this one, exists.
    Renewed,
    /// Past its notAfter and never renewed.
    Expired,
    /// Revoked (whatever else is true of it).
    Revoked,
}

/// What the store knows of a certificate that decides its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenewalFacts {
    pub not_before: i64,
    pub not_after: i64,
    pub revoked: bool,
    /// A successor exists (`certificates.renewed_by`).
    pub renewed: bool,
}

/// The renewal window as configured (`[renewal] window_start_percent/window_end_percent`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowPercents {
    pub start: u8,
    pub end: u8,
}

impl RenewalState {
    /// Every state, in the order they are listed and counted.
    pub const ALL: [RenewalState; 6] = [
        RenewalState::Active,
        RenewalState::Due,
        RenewalState::Overdue,
        RenewalState::Renewed,
        RenewalState::Expired,
        RenewalState::Revoked,
    ];

    /// The state of a certificate at `now`. Revoked wins over everything, then renewed (an old
    /// certificate expiring after its successor was issued is the normal course), then the time.
    pub fn of(facts: &RenewalFacts, window: WindowPercents, now: i64) -> Self {
        if facts.revoked {
            return RenewalState::Revoked;
        }
        if facts.renewed {
            return RenewalState::Renewed;
        }
        if now >= facts.not_after {
            return RenewalState::Expired;
        }
        let (start, end) = ari::window(facts.not_before, facts.not_after, window.start, window.end);
        if now >= end {
            RenewalState::Overdue
        } else if now >= start {
            RenewalState::Due
        } else {
            RenewalState::Active
        }
    }

    /// The name used on the command line, in JSON and as the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RenewalState::Active => "active",
            RenewalState::Due => "due",
            RenewalState::Overdue => "overdue",
            RenewalState::Renewed => "renewed",
            RenewalState::Expired => "expired",
            RenewalState::Revoked => "revoked",
        }
    }

    /// `true` for the states a certificate can still leave by time alone (neither renewed nor
    /// revoked): the ones the store reads back to place them.
    pub fn is_live(self) -> bool {
        !matches!(self, RenewalState::Renewed | RenewalState::Revoked)
    }
}

impl fmt::Display for RenewalState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RenewalState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|st| st.as_str()).collect();
            format!("unknown renewal state {s:?}: one of {}", names.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: WindowPercents = WindowPercents { start: 33, end: 67 };

    fn at(now: i64, revoked: bool, renewed: bool) -> RenewalState {
        // 90 units of life: the window is [29, 60).
        RenewalState::of(&RenewalFacts { not_before: 0, not_after: 90, revoked, renewed }, WINDOW, now)
    }

    #[test]
    fn time_moves_a_certificate_through_its_window() {
        use RenewalState::*;
        for (now, want) in
            [(0, Active), (28, Active), (29, Due), (59, Due), (60, Overdue), (89, Overdue), (90, Expired)]
        {
            assert_eq!(at(now, false, false), want, "at {now}");
        }
    }

    #[test]
    fn revoked_wins_then_renewed() {
        for now in [0, 30, 70, 100] {
            assert_eq!(at(now, true, true), RenewalState::Revoked);
            assert_eq!(at(now, true, false), RenewalState::Revoked);
            assert_eq!(at(now, false, true), RenewalState::Renewed);
        }
    }

    #[test]
    fn names_round_trip() {
        for st in RenewalState::ALL {
            assert_eq!(st.as_str().parse::<RenewalState>(), Ok(st));
        }
        assert!("valid".parse::<RenewalState>().unwrap_err().contains("overdue"));
        assert_eq!(RenewalState::ALL.iter().filter(|s| s.is_live()).count(), 4);
    }
}
