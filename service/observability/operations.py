"""The operator view's data (GET /operations/models): each model's versions, labels, canary,
live accuracy with its counts, shadow agreement and drift, in one answer for the page.

Nothing is computed here, only gathered from where each figure is kept: the versions, labels
and canary from the model repository (as /models shows them), the live accuracy from the
prediction store (service/store/accuracy.py, as /models/{name} and `release status` show
it), and the shadow agreement and drift from the metrics (as /metrics shows them).
"""

from typing import TYPE_CHECKING

from service.observability import metrics
from service.store.accuracy import LiveAccuracy, live_accuracy_or_none

if TYPE_CHECKING:
    from service.models.repository import ModelRepository
    from service.store.database import Database

# The prediction store as the view saw it: off (no PREDICTION_STORE), on, or unreadable now.
STORE_OFF, STORE_ON, STORE_UNAVAILABLE = "off", "on", "unavailable"


def gather(models: "ModelRepository", database: "Database | None") -> dict:
    """Every model as the operator view shows it, and the state of the prediction store."""
    accuracies = None if database is None else live_accuracy_or_none(database)
    store = STORE_OFF if database is None else STORE_ON if accuracies is not None \
        else STORE_UNAVAILABLE
    agreement, drift = metrics.shadow_agreement(), metrics.drift()
    return {"prediction_store": store,
            "models": [_model(model.describe(), accuracies, agreement, drift)
                       for _, model in sorted(models.models.items())]}


def _model(described: dict, accuracies: dict[tuple, LiveAccuracy] | None,
           agreement: dict[tuple, list], drift: dict[tuple, dict]) -> dict:
    """One model: its state, labels and canary, and each version's figures."""
    name = described["name"]
    versions = []
    for entry in described["versions"]:
        version = entry["version"]
        versions.append({
            "version": version, "state": entry["state"], "labels": entry["labels"],
            "reason": entry.get("reason") or None,
            # By the label each prediction was answered under (stable, canary, a label a
            # request named, or none when the request named the version).
            "live_accuracy": None if accuracies is None else [
                {"version_label": label, **counts.describe()}
                for (model, answered_by, label), counts in sorted(accuracies.items())
                if model == name and answered_by == version],
            "shadow_agreement": agreement.get((name, version), []),
            "drift": drift.get((name, version))})
    return {"name": name, "state": described["state"], "reason": described["reason"],
            "labels": described["labels"], "canary": described["canary"],
            "policy_problem": described["policy"]["problem"] or None, "versions": versions}
