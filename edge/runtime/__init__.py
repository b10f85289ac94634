"""The engine's processes: ``kairos up``, the worker table, supervision, the embedded Redis,
settings, the config file and logs."""
