//! Peer registration under a renewed etcd lease, and the watch-fed peer cache.
