"""High availability: the Kubernetes calls, the Lease elector, and the daemon's side of it."""
