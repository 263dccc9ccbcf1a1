"""The pure core: key arithmetic, the policy, maintenance windows. No I/O, no clock reads."""
