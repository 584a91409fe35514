"""The coordinator: the one database client of a running sweep (``coordinator``), its Ray actor (``actor``),
the pruners it decides with (``pruning``: median, percentile, successive halving, Hyperband), the sampler
wrapper that learns from out-of-memory trials (``sampling``), its settings and messages, its direct
writes (``writes``) and its narrow reads at start and first ask (``reads``).

Kept import-free: trial workers import ``hpo.coordinator.actor`` and must not pull Optuna in through here.
"""
