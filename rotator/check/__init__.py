"""One check of one account: gather, decide with the core's policy, and rotate."""
