"""profiles: arrives with its issue."""
