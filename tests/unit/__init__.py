"""Unit tests: pure functions and single objects, with fakes only at a transport seam or a clock.

No process, no socket.
"""
