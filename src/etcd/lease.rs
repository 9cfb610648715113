//! Leases: grant, keepalive (one POST per renewal), revoke, time-to-live.

use serde_json::json;

use super::codec::{KeepAliveResponse, LeaseGrantResponse, TimeToLiveResponse};
use super::{Client, Error, Result};

/// A lease ID. The gateway speaks decimal; etcdctl prints hex ([`LeaseId::hex`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseId(pub i64);

impl LeaseId {
    /// The ID in hex, as etcdctl prints it.
    pub fn hex(&self) -> String {
        format!("{:x}", self.0)
    }
}

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Its ID.
    pub id: LeaseId,
    /// The TTL etcd granted, in seconds.
    pub ttl: i64,
}

/// Remaining and granted time of a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTtl {
    /// Seconds left.
    pub ttl: i64,
    /// Seconds granted.
    pub granted_ttl: i64,
}

impl Client {
    /// Grants a lease of `ttl` seconds.
    pub fn lease_grant(&self, ttl: i64) -> Result<Lease> {
        let r: LeaseGrantResponse =
            self.call("/v3/lease/grant", &json!({ "TTL": ttl.to_string() }))?;
        if !r.error.is_empty() || r.id == 0 {
            return Err(Error::Etcd {
                endpoint: self.preferred_endpoint(),
                path: "/v3/lease/grant".into(),
                code: 0,
                message: if r.error.is_empty() {
                    "no lease ID in answer".into()
                } else {
                    r.error
                },
            });
        }
        Ok(Lease {
            id: LeaseId(r.id),
            ttl: r.ttl,
        })
    }

    /// Renews a lease once. `Ok(None)` when the lease no longer exists
    /// (expired, revoked, or etcd lost its data): grant a new one.
    pub fn lease_keepalive(&self, id: LeaseId) -> Result<Option<i64>> {
        // One keepalive per POST: extra messages in one request are ignored (etcd #8237).
        let r: KeepAliveResponse =
            self.call("/v3/lease/keepalive", &json!({ "ID": id.0.to_string() }))?;
        Ok(r.result.map(|r| r.ttl).filter(|&ttl| ttl > 0))
    }

    /// Revokes a lease, deleting every key attached to it. A lease that is
    /// already gone is not an error.
    pub fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        match self.call::<serde_json::Value>("/v3/lease/revoke", &json!({ "ID": id.0.to_string() }))
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_lease_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Time left on a lease; `Ok(None)` when it no longer exists.
    pub fn lease_ttl(&self, id: LeaseId) -> Result<Option<LeaseTtl>> {
        let r: TimeToLiveResponse =
            self.call("/v3/lease/timetolive", &json!({ "ID": id.0.to_string() }))?;
        if r.ttl < 0 {
            return Ok(None);
        }
        Ok(Some(LeaseTtl {
            ttl: r.ttl,
            granted_ttl: r.granted_ttl,
        }))
    }
}
