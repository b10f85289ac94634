"""bandits: arrives with its issue."""
