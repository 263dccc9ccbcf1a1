"""End to end: the real rotator process, over real HTTP, against the simulator (and the Kubernetes API
stand-in)."""
