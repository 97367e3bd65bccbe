//! Which deliveries of a provider's log to ask again for, and which to
//! report: pure, given what the log says and what hookrelay stored.

use std::collections::{HashMap, HashSet};

use time::OffsetDateTime;

use crate::store::recovery::Refused;

/// One entry of a provider's delivery log: one attempt to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// The provider's id of this attempt (what a redelivery names).
    pub log_id: String,
    /// The id hookrelay stores the event under; the same on every attempt
    /// (`X-GitHub-Delivery`, GitLab's `Idempotency-Key`).
    pub delivery_id: Option<String>,
    pub delivered_at: Option<OffsetDateTime>,
    /// What hookrelay answered; 0 when nothing answered (refused connection,
    /// timeout, TLS failure).
    pub status_code: u16,
    pub event: String,
}

impl LogEntry {
    /// Not answered, or answered in a way that says hookrelay could not take
    /// it then: no connection, timeout, 408, 429, 5xx.
    fn missed(&self) -> bool {
        matches!(self.status_code, 0 | 408 | 429 | 500..=599)
    }

    fn accepted(&self) -> bool {
        (200..300).contains(&self.status_code)
    }
}

/// Redeliveries of one delivery asked at most this many times in all: a
/// delivery hookrelay keeps failing is reported, not asked for forever.
pub const MAX_ASKS: usize = 3;

/// What a run does with a log.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Attempts (the newest failed one of each delivery) to ask again for,
    /// oldest first.
    pub redeliver: Vec<LogEntry>,
    /// Deliveries hookrelay refused with another 4xx: wrong secret (401), bad
    /// request. Not asked again: they would be refused again.
    pub refused: Vec<Refused>,
    /// Deliveries not stored that hookrelay missed (asked for now or before).
    pub missing: usize,
}

/// `entries` in any order; `stored` the delivery ids hookrelay holds;
/// `asked` (delivery id, log id) of every redelivery asked already.
pub fn plan(entries: &[LogEntry], stored: &HashSet<String>, asked: &[(String, String)]) -> Plan {
    let mut by_delivery: HashMap<&str, Vec<&LogEntry>> = HashMap::new();
    for entry in entries {
        if let Some(id) = &entry.delivery_id {
            by_delivery.entry(id).or_default().push(entry);
        }
    }
    let asked_logs: HashSet<&str> = asked.iter().map(|(_, log)| log.as_str()).collect();
    let mut asks: HashMap<&str, usize> = HashMap::new();
    for (delivery, _) in asked {
        *asks.entry(delivery).or_default() += 1;
    }
    let mut result = Plan::default();
    for (delivery, mut attempts) in by_delivery {
        if stored.contains(delivery) || attempts.iter().any(|a| a.accepted()) {
            // Stored, or accepted once (and since removed by retention).
            continue;
        }
        attempts.sort_by_key(|a| (a.delivered_at, a.log_id.clone()));
        let newest = attempts.last().expect("a group has an attempt");
        if !newest.missed() {
            result.refused.push(Refused {
                delivery_id: delivery.to_owned(),
                status_code: newest.status_code,
                delivered_at: newest.delivered_at,
                event: newest.event.clone(),
            });
            continue;
        }
        result.missing += 1;
        let asked_already = asked_logs.contains(newest.log_id.as_str());
        if !asked_already && asks.get(delivery).copied().unwrap_or(0) < MAX_ASKS {
            result.redeliver.push((*newest).clone());
        }
    }
    result
        .redeliver
        .sort_by_key(|a| (a.delivered_at, a.log_id.clone()));
    result
        .refused
        .sort_by_key(|r| (r.delivered_at, r.delivery_id.clone()));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(log: &str, delivery: &str, minute: i64, status: u16) -> LogEntry {
        LogEntry {
            log_id: log.into(),
            delivery_id: Some(delivery.into()),
            delivered_at: Some(
                OffsetDateTime::from_unix_timestamp(1_700_000_000 + minute * 60).unwrap(),
            ),
            status_code: status,
            event: "push".into(),
        }
    }

    fn logs(plan: &Plan) -> Vec<&str> {
        plan.redeliver.iter().map(|e| e.log_id.as_str()).collect()
    }

    #[test]
    fn missed_deliveries_are_asked_for_oldest_first_and_refusals_reported() {
        let entries = [
            entry("5", "e", 5, 503),
            entry("1", "a", 1, 0),
            entry("2", "b", 2, 401),
            entry("3", "c", 3, 429),
            entry("4", "d", 4, 502),
            entry("6", "f", 6, 400),
        ];
        let stored: HashSet<String> = ["d".to_owned()].into();
        let plan = plan(&entries, &stored, &[]);
        assert_eq!(logs(&plan), ["1", "3", "5"]);
        assert_eq!(plan.missing, 3);
        let refused: Vec<(&str, u16)> = plan
            .refused
            .iter()
            .map(|r| (r.delivery_id.as_str(), r.status_code))
            .collect();
        assert_eq!(refused, [("b", 401), ("f", 400)]);
    }

    #[test]
    fn each_delivery_is_asked_once_per_failed_attempt_and_at_most_max_asks_times() {
        // a failed, was asked again (log 2) and failed again: ask for log 2.
        let entries = [entry("1", "a", 1, 0), entry("2", "a", 2, 503)];
        let plan1 = plan(&entries, &HashSet::new(), &[("a".into(), "1".into())]);
        assert_eq!(logs(&plan1), ["2"]);
        // Asked for log 2 already: nothing new to ask, still missing.
        let asked = [("a".into(), "1".into()), ("a".into(), "2".into())];
        let plan2 = plan(&entries, &HashSet::new(), &asked);
        assert!(plan2.redeliver.is_empty());
        assert_eq!(plan2.missing, 1);
        // Three asks: reported as missing, not asked again.
        let entries = [entry("4", "a", 4, 503)];
        let asked: Vec<(String, String)> = ["1", "2", "3"]
            .iter()
            .map(|l| ("a".into(), (*l).into()))
            .collect();
        let plan3 = plan(&entries, &HashSet::new(), &asked);
        assert!(plan3.redeliver.is_empty());
        assert_eq!(plan3.missing, 1);
    }

    #[test]
    fn a_delivery_accepted_once_is_never_asked_for() {
        // Accepted, then removed by retention: not missed.
        let entries = [entry("1", "a", 1, 503), entry("2", "a", 2, 202)];
        let plan = plan(&entries, &HashSet::new(), &[]);
        assert_eq!(plan, Plan::default());
        // An entry without a delivery id cannot be matched: skipped.
        let mut anonymous = entry("3", "x", 3, 0);
        anonymous.delivery_id = None;
        assert_eq!(
            super::plan(&[anonymous], &HashSet::new(), &[]),
            Plan::default()
        );
    }
}
