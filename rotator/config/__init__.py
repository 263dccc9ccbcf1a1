"""The configuration: its model, loading, checks, messages, credentials' sources, what a reload changes."""
