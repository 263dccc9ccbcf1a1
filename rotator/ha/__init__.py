"""High availability: the Kubernetes calls, the Lease elector, the ledger in ConfigMaps, and the
daemon's side of it."""
