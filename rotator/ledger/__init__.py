"""The rotation ledger and its two stores: a state file, or ConfigMaps under leader election."""
