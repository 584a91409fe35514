"""The coordinator as a Ray actor: a thin class whose methods forward to ``Coordinator``, and where it runs.

It lives apart from the coordinator because a Ray worker that receives an actor's handle imports the
module of the actor's class, and trial workers must not import Optuna, SQLAlchemy or pydantic (hundreds of
milliseconds at a worker's first trial, and memory on every GPU worker). This module imports nothing
heavy; the coordinator is imported in the actor's own process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpo.coordinator.messages import Asked, Outcome, Reaped, Told
    from hpo.coordinator.settings import CoordinatorSettings

#: A resource Ray gives the head node only.
HEAD_RESOURCE = "node:__internal_head__"


class CoordinatorActor:
    """Built with the sweep's ``CoordinatorSettings``, not yet connected (see ``Coordinator.connect``)."""

    def __init__(self, settings: CoordinatorSettings) -> None:
        from hpo.coordinator.coordinator import Coordinator

        self._c = Coordinator(settings, connect=False)

    def connect(self) -> bool:
        return self._c.connect()

    def ask(self) -> Asked:
        return self._c.ask()

    def fail_and_retry(self, trial_id: int, outcome: Outcome) -> tuple[Told, Asked]:
        return self._c.fail_and_retry(trial_id, outcome)

    def reap(self, trial_ids: list[int], reason: str, retries: int, limit: int) -> Reaped:
        return self._c.reap(trial_ids, reason, retries, limit)

    def started(self, trial_id: int, node: dict[str, Any]) -> bool:
        return self._c.started(trial_id, node)

    def report(self, trial_id: int, step: int, metrics: Mapping[str, float]) -> str:
        return self._c.report(trial_id, step, metrics)

    def tell(self, trial_id: int, outcome: Outcome) -> Told:
        return self._c.tell(trial_id, outcome)

    def pause(self, trial_id: int, outcome: Outcome) -> Told:
        return self._c.pause(trial_id, outcome)

    def resume(self) -> Asked | None:
        return self._c.resume()

    def give_up_paused(self, new_trials: float, everything: bool = False) -> list[Told]:
        return self._c.give_up_paused(new_trials, everything)

    def heartbeat(self) -> bool:
        return self._c.heartbeat()

    def stop_request(self) -> dict[str, Any] | None:
        return self._c.stop_request()

    def live(self) -> list[dict[str, Any]]:
        return self._c.live()

    def close(self) -> bool:
        return self._c.close()


def start(settings: CoordinatorSettings) -> Any:
    """The coordinator actor on the head node (the one node a cluster cannot lose and live on), taking no
    CPU a trial could use. Only it reaches the database, so workers on other nodes need no credentials.

    Returns its handle at once, the actor not yet connected: its process starts and imports meanwhile; call
    ``connect`` once the study exists (calls made before then wait for the process, in order)."""
    import ray

    on_head = any(HEAD_RESOURCE in node.get("Resources", {}) for node in ray.nodes() if node.get("Alive"))
    options: dict[str, Any] = {"num_cpus": 0, "max_restarts": 0, "max_concurrency": 1}
    if on_head:
        options["resources"] = {HEAD_RESOURCE: 0.001}
    return ray.remote(**options)(CoordinatorActor).remote(settings)
