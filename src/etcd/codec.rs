//! The gateway's JSON encoding, handled in one place.
//!
//! Keys and values are base64; int64 fields (lease IDs, revisions, TTLs)
//! arrive as JSON strings and are parsed as integers, never through a float;
//! fields at their proto3 default are left out of the JSON entirely.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Deserializer};

/// Base64 of `bytes`, as the gateway wants keys and values.
pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Decodes a base64 field.
pub fn unb64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    B64.decode(s)
}

/// The `range_end` that selects every key starting with `prefix`: drop
/// trailing 0xff bytes, add one to the last byte. A prefix of only 0xff bytes
/// (or an empty one) has no upper bound: etcd's `"\0"` means "to the end".
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            let n = end.len();
            end[n - 1] = last + 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

/// Deserializes an int64 sent as a JSON string (or, leniently, a number).
pub fn de_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    de_int(d)
}

/// An integer from a JSON string of digits or a JSON number; never through a float.
fn de_int<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + std::str::FromStr,
    T::Err: std::fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int<'a, T> {
        Num(T),
        Str(&'a str),
        Owned(String),
    }
    match Int::<T>::deserialize(d)? {
        Int::Num(n) => Ok(n),
        Int::Str(s) => s.parse().map_err(serde::de::Error::custom),
        Int::Owned(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

/// Deserializes a base64 field into bytes.
pub fn de_b64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    unb64(&s).map_err(serde::de::Error::custom)
}

/// The response header every gateway answer carries.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Header {
    /// The store revision when the request was served.
    #[serde(default, deserialize_with = "de_i64")]
    pub revision: i64,
}

/// A key-value pair as etcd stores it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct KeyValue {
    /// The key.
    #[serde(default, deserialize_with = "de_b64")]
    pub key: Vec<u8>,
    /// The value (empty in DELETE events).
    #[serde(default, deserialize_with = "de_b64")]
    pub value: Vec<u8>,
    /// Revision of the last change to this key.
    #[serde(default, deserialize_with = "de_i64")]
    pub mod_revision: i64,
    /// Revision at which the key was created.
    #[serde(default, deserialize_with = "de_i64")]
    pub create_revision: i64,
    /// The lease attached to the key, 0 for none.
    #[serde(default, deserialize_with = "de_i64")]
    pub lease: i64,
}

impl KeyValue {
    /// The key as text (lossy for non-UTF-8 keys).
    pub fn key_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.key)
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct RangeResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub kvs: Vec<KeyValue>,
    #[serde(default)]
    pub more: bool,
}

#[derive(Debug, Deserialize)]
pub(crate) struct PutResponse {
    #[serde(default)]
    pub header: Header,
}

#[derive(Debug, Deserialize)]
pub(crate) struct DeleteResponse {
    #[serde(default, deserialize_with = "de_i64")]
    pub deleted: i64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct LeaseGrantResponse {
    #[serde(rename = "ID", default, deserialize_with = "de_i64")]
    pub id: i64,
    #[serde(rename = "TTL", default, deserialize_with = "de_i64")]
    pub ttl: i64,
    #[serde(default)]
    pub error: String,
}

/// `/v3/lease/keepalive` wraps its answer in `result`; a lease that no longer
/// exists comes back without `TTL` (or with `TTL` 0).
#[derive(Debug, Deserialize)]
pub(crate) struct KeepAliveResponse {
    #[serde(default)]
    pub result: Option<KeepAliveResult>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct KeepAliveResult {
    #[serde(rename = "TTL", default, deserialize_with = "de_i64")]
    pub ttl: i64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TimeToLiveResponse {
    #[serde(rename = "TTL", default, deserialize_with = "de_i64")]
    pub ttl: i64,
    #[serde(rename = "grantedTTL", default, deserialize_with = "de_i64")]
    pub granted_ttl: i64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct AuthResponse {
    #[serde(default)]
    pub token: String,
}

/// etcd's error body: `{"error": "...", "code": N, "message": "..."}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub code: i64,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub error: String,
}

/// One line of a `/v3/watch` stream.
#[derive(Debug, Deserialize)]
pub(crate) struct WatchLine {
    #[serde(default)]
    pub result: Option<WatchResult>,
    #[serde(default)]
    pub error: Option<WatchStreamError>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WatchStreamError {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub grpc_code: i64,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WatchResult {
    #[serde(default)]
    pub created: bool,
    #[serde(default)]
    pub canceled: bool,
    #[serde(default, deserialize_with = "de_i64")]
    pub compact_revision: i64,
    #[serde(default)]
    pub cancel_reason: String,
    #[serde(default)]
    pub events: Vec<RawEvent>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawEvent {
    /// Absent for PUT (the proto3 default), `"DELETE"` for deletes.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub kv: KeyValue,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_range_end_increments_last_byte() {
        assert_eq!(prefix_range_end(b"/piratebay/peers/"), b"/piratebay/peers0");
        assert_eq!(prefix_range_end(b"a"), b"b");
    }

    #[test]
    fn prefix_range_end_drops_trailing_ff() {
        assert_eq!(prefix_range_end(&[b'a', 0xff]), vec![b'b']);
        assert_eq!(
            prefix_range_end(&[b'a', 0xfe, 0xff, 0xff]),
            vec![b'a', 0xff]
        );
    }

    #[test]
    fn prefix_range_end_all_ff_or_empty_means_to_the_end() {
        assert_eq!(prefix_range_end(&[0xff, 0xff]), vec![0]);
        assert_eq!(prefix_range_end(&[]), vec![0]);
        assert_eq!(b64(&prefix_range_end(&[0xff])), "AA==");
    }

    #[test]
    fn int64_strings_near_2_pow_63_parse_exactly() {
        let r: LeaseGrantResponse =
            serde_json::from_str(r#"{"ID":"9223372036854775807","TTL":"10"}"#).unwrap();
        assert_eq!(r.id, i64::MAX);
        assert_eq!(r.ttl, 10);
        let h: Header = serde_json::from_str(
            r#"{"revision":"9223372036854775806","member_id":"18446744073709551615"}"#,
        )
        .unwrap();
        assert_eq!(h.revision, i64::MAX - 1);
    }

    #[test]
    fn int64_rejects_garbage() {
        assert!(serde_json::from_str::<LeaseGrantResponse>(r#"{"ID":"12x"}"#).is_err());
        assert!(serde_json::from_str::<LeaseGrantResponse>(r#"{"ID":"1e3"}"#).is_err());
    }

    #[test]
    fn empty_range_omits_kvs_and_count() {
        let r: RangeResponse = serde_json::from_str(
            r#"{"header":{"cluster_id":"1","member_id":"2","revision":"7","raft_term":"3"}}"#,
        )
        .unwrap();
        assert!(r.kvs.is_empty());
        assert_eq!(r.header.revision, 7);
        assert!(!r.more);
    }

    #[test]
    fn range_decodes_base64_and_lease() {
        let r: RangeResponse = serde_json::from_str(
            r#"{"header":{"revision":"9"},"kvs":[{"key":"YQ==","value":"Yg==","create_revision":"4","mod_revision":"9","version":"2","lease":"7587874325497905413"}],"count":"1"}"#,
        )
        .unwrap();
        assert_eq!(r.kvs[0].key, b"a");
        assert_eq!(r.kvs[0].value, b"b");
        assert_eq!(r.kvs[0].mod_revision, 9);
        assert_eq!(r.kvs[0].lease, 7587874325497905413);
    }

    #[test]
    fn keepalive_without_ttl_means_lease_gone() {
        let r: KeepAliveResponse =
            serde_json::from_str(r#"{"result":{"header":{"revision":"3"},"ID":"5"}}"#).unwrap();
        assert_eq!(r.result.unwrap().ttl, 0);
        let r: KeepAliveResponse =
            serde_json::from_str(r#"{"result":{"header":{},"ID":"5","TTL":"10"}}"#).unwrap();
        assert_eq!(r.result.unwrap().ttl, 10);
    }

    #[test]
    fn watch_lines_parse_put_delete_and_compaction() {
        let created: WatchLine = serde_json::from_str(
            r#"{"result":{"header":{"cluster_id":"1","member_id":"2","revision":"5","raft_term":"2"},"created":true}}"#,
        )
        .unwrap();
        assert!(created.result.unwrap().created);

        let events: WatchLine = serde_json::from_str(
            r#"{"result":{"header":{"revision":"7"},"events":[{"kv":{"key":"YQ==","create_revision":"6","mod_revision":"6","version":"1","value":"MQ=="}},{"type":"DELETE","kv":{"key":"YQ==","mod_revision":"7"}}]}}"#,
        )
        .unwrap();
        let res = events.result.unwrap();
        assert_eq!(res.events.len(), 2);
        assert_eq!(res.events[0].kind, None);
        assert_eq!(res.events[0].kv.value, b"1");
        assert_eq!(res.events[1].kind.as_deref(), Some("DELETE"));
        assert_eq!(res.events[1].kv.mod_revision, 7);

        let compacted: WatchLine = serde_json::from_str(
            r#"{"result":{"header":{"revision":"20"},"canceled":true,"compact_revision":"15"}}"#,
        )
        .unwrap();
        let res = compacted.result.unwrap();
        assert!(res.canceled);
        assert_eq!(res.compact_revision, 15);

        let err: WatchLine = serde_json::from_str(
            r#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#,
        )
        .unwrap();
        assert_eq!(err.error.unwrap().grpc_code, 14);
    }
}
