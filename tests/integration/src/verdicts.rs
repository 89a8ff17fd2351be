//! Reading `cmactl --json failures` rows (shared by the loopback and lab tests).

use serde_json::Value;

/// Seconds from `since_us` to the verdict's `at_us`.
pub fn detection_secs(failure: &Value, since_us: u64) -> f64 {
    let at = failure["at_us"].as_u64().unwrap_or(0);
    at.saturating_sub(since_us) as f64 / 1e6
}

/// Host ids that reported the failure (the `Report` evidence).
pub fn reporters(failure: &Value) -> Vec<u64> {
    let mut r: Vec<u64> = failure["evidence"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| x["Report"]["reporter"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    r.sort_unstable();
    r.dedup();
    r
}

/// The hosts whose heartbeats to the subject met port-unreachable (`Refused` reports in
/// the evidence), sorted.
pub fn refusers(failure: &Value) -> Vec<u64> {
    let mut r: Vec<u64> = failure["evidence"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|x| x["Report"]["kind"] == "Refused")
                .filter_map(|x| x["Report"]["reporter"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    r.sort_unstable();
    r.dedup();
    r
}

/// The failure's `hosts`, sorted.
pub fn hosts_of(failure: &Value) -> Vec<u64> {
    let mut h: Vec<u64> = failure["hosts"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    h.sort_unstable();
    h
}
