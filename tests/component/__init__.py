"""Component tests: one part of rotator (or a test double) over real loopback sockets or real files,
in this process."""
