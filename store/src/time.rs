//! Times are stored as microseconds since the Unix epoch, which both databases
//! compare and index the same way.

use chrono::{DateTime, Utc};

use crate::StoreError;

/// The server clock, as the realtime path reads it.
pub fn now_micros() -> i64 {
    inside_schemas::server_now_us()
}

pub fn from_micros(us: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| StoreError::Corrupt(format!("time {us}")))
}

pub(crate) fn parse_uuid(s: &str) -> Result<uuid::Uuid, StoreError> {
    uuid::Uuid::parse_str(s).map_err(|_| StoreError::Corrupt(format!("id {s:?}")))
}

/// Keyset cursor for newest-first lists: `"<created_at_us>_<id>"`.
pub fn encode_cursor(created_at: i64, id: &uuid::Uuid) -> String {
    format!("{created_at}_{id}")
}

pub fn decode_cursor(c: &str) -> Option<(i64, String)> {
    let (t, id) = c.split_once('_')?;
    let t: i64 = t.parse().ok()?;
    let id = uuid::Uuid::parse_str(id).ok()?;
    Some((t, id.to_string()))
}

/// Enums are stored as their wire names (`"romantic"`, `"granted"`, …).
pub(crate) fn enum_to_db<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

pub(crate) fn enum_from_db<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| StoreError::Corrupt(format!("value {s:?}")))
}
