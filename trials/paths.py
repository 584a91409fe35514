"""Names of the files a training run writes in its folder (no imports: the control plane uses them too)."""

from __future__ import annotations

#: The epoch checkpoint a run resumes from (removed once the run has finished).
CHECKPOINT_NAME = "checkpoint.pt"
#: The final model ``hpo train`` writes.
MODEL_NAME = "model.pt"
#: The final metrics ``hpo train`` writes.
METRICS_NAME = "metrics.json"
