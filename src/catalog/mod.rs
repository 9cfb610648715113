//! The network-wide file catalog: every registered peer's `/v1/files`,
//! fetched in parallel, cached per (peer id, index generation), merged by sha1.
