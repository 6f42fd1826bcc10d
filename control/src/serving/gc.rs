//! Revision garbage collection (contract `autoscaler-local.md` §1.9, §5 item 40): per
//! Configuration, the revisions no Route uses (`reserve`) go, oldest first, once stale by
//! `config-gc`'s retain times while more than `min-non-active-revisions` remain, and beyond
//! `max-non-active-revisions` regardless. The latest ready revision and those annotated
//! `serving.knative.dev/no-gc: "true"` are never collected. A pure function of the clock.

use std::collections::BTreeMap;

use crate::kpa::goparse::{self, GoDuration};

/// The annotation that keeps a revision from collection.
pub const NO_GC: &str = "serving.knative.dev/no-gc";

/// `config-gc`; None: `disabled`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcConfig {
    pub retain_since_create: Option<GoDuration>,
    pub retain_since_last_active: Option<GoDuration>,
    pub min_non_active: u64,
    pub max_non_active: Option<u64>,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            retain_since_create: Some(GoDuration::seconds(48 * 3600)),
            retain_since_last_active: Some(GoDuration::seconds(15 * 3600)),
            min_non_active: 20,
            max_non_active: Some(1000),
        }
    }
}

/// One revision of a Configuration, as the collector sees it (times in seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub created: i64,
    /// When its routing state last changed (`routingStateModified`).
    pub routing_state_modified: i64,
    /// `routingState: reserve`.
    pub reserve: bool,
    /// Its Configuration's latest ready revision.
    pub latest_ready: bool,
    pub no_gc: bool,
}

impl GcConfig {
    /// The ConfigMap's data over Knative's defaults; the first problem, in Knative's words.
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<GcConfig, String> {
        let mut c = GcConfig::default();
        for (key, slot) in [
            ("retain-since-create-time", &mut c.retain_since_create),
            (
                "retain-since-last-active-time",
                &mut c.retain_since_last_active,
            ),
        ] {
            match data.get(key).map(|v| v.trim()) {
                None => {}
                Some("disabled") => *slot = None,
                Some(v) => match goparse::duration(v) {
                    Ok(d) if !d.is_negative() => *slot = Some(d),
                    Ok(_) => return Err(format!("failed to parse {key}: must be non-negative")),
                    Err(e) => return Err(format!("failed to parse {key}: {e}")),
                },
            }
        }
        if let Some(v) = data.get("min-non-active-revisions") {
            let n: i64 = v
                .trim()
                .parse()
                .map_err(|_| format!("failed to parse min-non-active-revisions: {v:?}"))?;
            c.min_non_active = u64::try_from(n)
                .map_err(|_| format!("min-non-active-revisions must be non-negative, was: {n}"))?;
        }
        match data.get("max-non-active-revisions").map(|v| v.trim()) {
            None => {}
            Some("disabled") => c.max_non_active = None,
            Some(v) => {
                c.max_non_active = Some(
                    v.parse()
                        .map_err(|_| format!("failed to parse max-non-active-revisions: {v:?}"))?,
                )
            }
        }
        if let Some(max) = c.max_non_active {
            if c.min_non_active > max {
                return Err(format!(
                    "min-non-active-revisions({}) must be <= max-non-active-revisions({max})",
                    c.min_non_active
                ));
            }
        }
        Ok(c)
    }

    /// The revisions of one Configuration to delete at second `now`.
    pub fn collect(&self, revisions: &[Candidate], now: i64) -> Vec<String> {
        let mut eligible: Vec<&Candidate> = revisions
            .iter()
            .filter(|r| r.reserve && !r.latest_ready && !r.no_gc)
            .collect();
        eligible.sort_by_key(|r| (r.routing_state_modified, r.created));
        let older = |limit: Option<GoDuration>, at: i64| {
            limit.is_none_or(|d| now - at > i64::try_from(d.std().as_secs()).unwrap_or(i64::MAX))
        };
        // Stale when older than every enabled retain time; with both disabled, none is.
        let both_off =
            self.retain_since_create.is_none() && self.retain_since_last_active.is_none();
        let stale = |r: &Candidate| {
            !both_off
                && older(self.retain_since_create, r.created)
                && older(self.retain_since_last_active, r.routing_state_modified)
        };
        let min = usize::try_from(self.min_non_active).unwrap_or(usize::MAX);
        let mut left = eligible.len();
        let mut doomed = Vec::new();
        for r in &eligible {
            if left <= min {
                break;
            }
            if stale(r) {
                doomed.push(r.name.clone());
                left -= 1;
            }
        }
        if let Some(max) = self.max_non_active {
            let max = usize::try_from(max).unwrap_or(usize::MAX);
            let rest: Vec<&&Candidate> = eligible
                .iter()
                .filter(|r| !doomed.contains(&r.name))
                .collect();
            for r in rest {
                if left <= max {
                    break;
                }
                doomed.push(r.name.clone());
                left -= 1;
            }
        }
        doomed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::data;

    fn rev(name: &str, at: i64, reserve: bool) -> Candidate {
        Candidate {
            name: name.to_owned(),
            created: at,
            routing_state_modified: at,
            reserve,
            latest_ready: false,
            no_gc: false,
        }
    }

    #[test]
    fn the_configmap_is_checked_in_knatives_words() {
        assert_eq!(GcConfig::from_data(&data(&[])), Ok(GcConfig::default()));
        let off = GcConfig::from_data(&data(&[
            ("retain-since-create-time", "disabled"),
            ("retain-since-last-active-time", "disabled"),
            ("min-non-active-revisions", "0"),
            ("max-non-active-revisions", "0"),
        ]))
        .expect("valid");
        assert_eq!(off.retain_since_create, None);
        assert_eq!(off.max_non_active, Some(0));
        let table = [
            (
                ("retain-since-create-time", "-1h"),
                "failed to parse retain-since-create-time: must be non-negative",
            ),
            (
                ("min-non-active-revisions", "-1"),
                "min-non-active-revisions must be non-negative, was: -1",
            ),
            (
                ("max-non-active-revisions", "5"),
                "min-non-active-revisions(20) must be <= max-non-active-revisions(5)",
            ),
        ];
        for ((k, v), want) in table {
            assert_eq!(GcConfig::from_data(&data(&[(k, v)])), Err(want.to_owned()));
        }
    }

    /// §5 item 40: min 0, max 0, retain times disabled.
    #[test]
    fn with_nothing_kept_every_reserve_revision_goes_but_the_protected_ones() {
        let c = GcConfig {
            retain_since_create: None,
            retain_since_last_active: None,
            min_non_active: 0,
            max_non_active: Some(0),
        };
        let mut kept = rev("a-00002", 20, true);
        kept.no_gc = true;
        let mut latest = rev("a-00003", 30, true);
        latest.latest_ready = true;
        let revisions = [
            rev("a-00001", 10, true),
            kept,
            latest,
            rev("a-00004", 40, false),
            rev("a-00005", 50, true),
        ];
        assert_eq!(c.collect(&revisions, 100), ["a-00001", "a-00005"]);
    }

    #[test]
    fn stale_revisions_go_oldest_first_while_more_than_min_remain_and_max_caps() {
        let c = GcConfig {
            retain_since_create: Some(GoDuration::seconds(100)),
            retain_since_last_active: Some(GoDuration::seconds(50)),
            min_non_active: 2,
            max_non_active: Some(3),
        };
        let revisions: Vec<Candidate> = (1..=6)
            .map(|i| rev(&format!("a-0000{i}"), i * 10, true))
            .collect();
        // At 120 only a-00001 (created at 10) is older than 100 s: it goes; five remain,
        // two more go as the oldest beyond the cap of 3.
        assert_eq!(
            c.collect(&revisions, 120),
            ["a-00001", "a-00002", "a-00003"]
        );
        // Much later every one is stale, but two are kept.
        assert_eq!(c.collect(&revisions, 10_000).len(), 4);
        // Nothing is stale and the cap is not reached.
        assert!(c.collect(&revisions[..3], 60).is_empty());
    }
}
