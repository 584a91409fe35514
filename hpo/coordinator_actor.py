"""The coordinator as a Ray actor: a thin class whose methods forward to ``hpo.coordinator.Coordinator``.

It lives apart from the coordinator because a Ray worker that receives an actor's handle imports the
module of the actor's class, and trial workers must not import Optuna, SQLAlchemy or pydantic (hundreds of
milliseconds at a worker's first trial, and memory on every GPU worker). This module imports nothing
heavy; the coordinator is imported in the actor's own process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpo.coordinator import Asked, Outcome


class CoordinatorActor:
    """Built with ``Coordinator``'s keyword arguments, not yet connected (see ``Coordinator.connect``)."""

    def __init__(self, **kwargs: Any) -> None:
        from hpo.coordinator import Coordinator

        self._c = Coordinator(**kwargs, connect=False)

    def connect(self) -> bool:
        return self._c.connect()

    def ask(self) -> Asked:
        return self._c.ask()

    def fail_and_retry(self, trial_id: int, outcome: Outcome, attempt: int) -> tuple[dict[str, Any], Asked]:
        return self._c.fail_and_retry(trial_id, outcome, attempt)

    def reap(self, trial_ids: list[int], reason: str, retries: int) -> tuple[list[int], list[tuple[Asked, int]]]:
        return self._c.reap(trial_ids, reason, retries)

    def started(self, trial_id: int, node: dict[str, Any]) -> None:
        self._c.started(trial_id, node)

    def report(self, trial_id: int, step: int, metrics: Mapping[str, float]) -> str:
        return self._c.report(trial_id, step, metrics)

    def tell(self, trial_id: int, outcome: Outcome) -> dict[str, Any]:
        return self._c.tell(trial_id, outcome)

    def heartbeat(self) -> bool:
        return self._c.heartbeat()

    def live(self) -> list[dict[str, Any]]:
        return self._c.live()

    def summary(self) -> dict[str, Any]:
        return self._c.summary()

    def close(self) -> bool:
        return self._c.close()
