"""What follows a check: events, notifications, publication, rotations made elsewhere."""
