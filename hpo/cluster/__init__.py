"""Ray: the session a sweep runs in (``session``), the trial task on workers (``worker``), and the watchdog
that cleans up after a killed driver (``watchdog``). Kept import-free: workers import ``hpo.cluster.worker``.
"""
