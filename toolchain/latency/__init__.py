"""Latency: backends (runners), the measurement protocol, and the SQLite store of measurements."""
