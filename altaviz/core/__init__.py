"""The core every layer builds on: settings, errors, database access, the telemetry contract,
the payload models that cross Temporal, links, contacts and the fleet registry.

It imports nothing from ``workflows``, ``activities``, ``etl``, ``rules``, ``worker`` or the
application layer (``altaviz.app``); the import contracts in ``pyproject.toml`` enforce it.
"""
