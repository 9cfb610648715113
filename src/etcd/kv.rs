//! Key-value requests: put, range (one key or a prefix, paged), delete.

use serde_json::json;

use super::codec::{b64, prefix_range_end, DeleteResponse, KeyValue, PutResponse, RangeResponse};
use super::{Client, LeaseId, Result};

/// Keys fetched per page of a prefix range: keeps each gateway answer far
/// below its 4 MiB reply limit (etcd #11327) for ordinary values. A page
/// whose answer is still too large (big values) is asked again with half
/// the limit, down to one key; a single key whose answer is too large is
/// skipped and counted in [`Listing::oversized`].
const PAGE: i64 = 500;

/// The keys under a prefix and the store revision they were read at.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The key-value pairs, sorted by key.
    pub kvs: Vec<KeyValue>,
    /// The revision of the store when read; watch from `revision + 1`.
    pub revision: i64,
    /// Keys left out because their value was over the size cap (or too
    /// large for one gateway answer).
    pub oversized: usize,
    /// A window ([`Client::get_window`]) stopped at its limit: more keys
    /// follow in its range.
    pub more: bool,
}

impl Client {
    /// Puts `key` = `value`, attached to `lease` if given. Returns the new revision.
    pub fn put(&self, key: &[u8], value: &[u8], lease: Option<LeaseId>) -> Result<i64> {
        let mut body = json!({ "key": b64(key), "value": b64(value) });
        if let Some(id) = lease {
            body["lease"] = json!(id.0.to_string());
        }
        let r: PutResponse = self.call("/v3/kv/put", &body)?;
        Ok(r.header.revision)
    }

    /// Reads one key.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let r: RangeResponse = self.call("/v3/kv/range", &json!({ "key": b64(key) }))?;
        Ok(r.kvs.into_iter().next())
    }

    /// Reads every key under `prefix`, page by page, all at one revision.
    /// Values too large for one gateway answer are skipped
    /// ([`Listing::oversized`]); nothing one key holds can fail the listing.
    pub fn get_prefix(&self, prefix: &[u8]) -> Result<Listing> {
        self.get_prefix_capped(prefix, usize::MAX)
    }

    /// Like [`Client::get_prefix`], also leaving out (and counting) every
    /// value over `max_value` bytes.
    pub fn get_prefix_capped(&self, prefix: &[u8], max_value: usize) -> Result<Listing> {
        let end = b64(&prefix_range_end(prefix));
        let mut out = Listing::default();
        let mut from = prefix.to_vec();
        let mut limit = PAGE;
        loop {
            let mut body =
                json!({ "key": b64(&from), "range_end": end, "limit": limit.to_string() });
            if out.revision > 0 {
                body["revision"] = json!(out.revision.to_string());
            }
            let r: RangeResponse = match self.call("/v3/kv/range", &body) {
                Ok(r) => r,
                Err(e) if e.is_too_large() && limit > 1 => {
                    limit = (limit / 2).max(1);
                    continue;
                }
                Err(e) if e.is_too_large() => {
                    // One value alone is too large: learn its key and skip it.
                    body["keys_only"] = json!(true);
                    let k: RangeResponse = self.call("/v3/kv/range", &body)?;
                    if out.revision == 0 {
                        out.revision = k.header.revision;
                    }
                    let Some(kv) = k.kvs.into_iter().next() else {
                        return Ok(out);
                    };
                    out.oversized += 1;
                    from = kv.key;
                    from.push(0);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if out.revision == 0 {
                out.revision = r.header.revision;
            }
            let more = r.more;
            let next = r.kvs.last().map(|kv| {
                let mut k = kv.key.clone();
                k.push(0);
                k
            });
            for kv in r.kvs {
                if kv.value.len() > max_value {
                    out.oversized += 1;
                } else {
                    out.kvs.push(kv);
                }
            }
            match (more, next) {
                (true, Some(k)) => {
                    from = k;
                    limit = (limit * 2).min(PAGE);
                }
                _ => return Ok(out),
            }
        }
    }

    /// One request: at most `limit` keys under `prefix` from the key
    /// `from` up to `until` (excluded; `None`: the prefix's end), sorted by
    /// key, leaving out (and counting) every value over `max_value` bytes.
    /// A window of a prefix, for readers that want a bounded sample rather
    /// than the whole prefix ([`Client::get_prefix`] pages through it all).
    pub fn get_window(
        &self,
        prefix: &[u8],
        from: &[u8],
        until: Option<&[u8]>,
        limit: usize,
        max_value: usize,
    ) -> Result<Listing> {
        let end = match until {
            Some(u) => u.to_vec(),
            None => prefix_range_end(prefix),
        };
        let from = if from < prefix { prefix } else { from };
        let body = json!({
            "key": b64(from),
            "range_end": b64(&end),
            "limit": limit.max(1).to_string(),
        });
        let r: RangeResponse = self.call("/v3/kv/range", &body)?;
        let mut out = Listing {
            revision: r.header.revision,
            more: r.more,
            ..Listing::default()
        };
        for kv in r.kvs {
            if kv.value.len() > max_value {
                out.oversized += 1;
            } else {
                out.kvs.push(kv);
            }
        }
        Ok(out)
    }

    /// Deletes one key. Returns how many keys were deleted (0 or 1).
    pub fn delete(&self, key: &[u8]) -> Result<i64> {
        let r: DeleteResponse = self.call("/v3/kv/deleterange", &json!({ "key": b64(key) }))?;
        Ok(r.deleted)
    }

    /// Deletes every key under `prefix`. Returns how many were deleted.
    pub fn delete_prefix(&self, prefix: &[u8]) -> Result<i64> {
        let body = json!({ "key": b64(prefix), "range_end": b64(&prefix_range_end(prefix)) });
        let r: DeleteResponse = self.call("/v3/kv/deleterange", &body)?;
        Ok(r.deleted)
    }
}
