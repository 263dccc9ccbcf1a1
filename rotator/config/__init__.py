"""The configuration: its model, loading, checks, messages and what a reload changes."""
