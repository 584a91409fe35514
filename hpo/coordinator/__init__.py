"""The coordinator: the one database client of a running sweep (``coordinator``), its Ray actor (``actor``),
the median rule it prunes with (``pruning``), its settings and messages, and its direct writes (``writes``).

Kept import-free: trial workers import ``hpo.coordinator.actor`` and must not pull Optuna in through here.
"""
