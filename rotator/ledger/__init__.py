"""The rotation ledger, in memory or in a state file (leader election keeps it in ConfigMaps: rotator.ha)."""
