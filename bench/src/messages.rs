//! What each load generator reports to the runner: one JSON line on stdout,
//! typed at both ends.

use serde::{Deserialize, Serialize};

/// Signed pushes at a fixed concurrency.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestLoad {
    pub ok: u64,
    pub non_2xx: u64,
    pub errors: u64,
    pub seconds: f64,
    pub per_second: f64,
    #[serde(with = "nan_as_null")]
    pub p50_ms: f64,
    #[serde(with = "nan_as_null")]
    pub p99_ms: f64,
}

/// Webhooks at a rate while a stream receives them: POST → stream latencies.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyLoad {
    pub posted: u64,
    pub failed: u64,
    pub received: usize,
    pub per_second: f64,
    #[serde(with = "nan_as_null")]
    pub p50_ms: f64,
    #[serde(with = "nan_as_null")]
    pub p99_ms: f64,
    #[serde(with = "nan_as_null")]
    pub max_ms: f64,
    #[serde(with = "nan_as_null")]
    pub commit_p50_ms: f64,
    #[serde(with = "nan_as_null")]
    pub commit_p99_ms: f64,
}

/// N idle streams and when one event reached them (microseconds since the epoch).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FanoutLoad {
    pub streams: usize,
    pub received: usize,
    pub last_receipt_us: Option<u64>,
    pub first_receipt_us: Option<u64>,
}

/// One consumer reading a backlog.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatchupLoad {
    pub events: usize,
    pub seconds: f64,
    pub per_second: f64,
    pub mib_per_second: f64,
}

/// JSON has no NaN (an empty percentile): it travels as null.
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        if value.is_nan() {
            serializer.serialize_none()
        } else {
            serializer.serialize_f64(*value)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_percentile_survives_the_trip() {
        let load = IngestLoad {
            ok: 0,
            non_2xx: 1,
            errors: 0,
            seconds: 1.0,
            per_second: 0.0,
            p50_ms: f64::NAN,
            p99_ms: 2.5,
        };
        let line = serde_json::to_string(&load).unwrap();
        let back: IngestLoad = serde_json::from_str(&line).unwrap();
        assert!(back.p50_ms.is_nan());
        assert_eq!(back.p99_ms, 2.5);
    }
}
