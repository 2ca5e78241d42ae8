"""Live accuracy: of the predictions that got feedback, how many had the true class on top.

Counts, never a bare rate: a share of 3 is not a share of 3000. It is only as fair as the
feedback: people report mistakes more often than successes, so the share is a floor for
comparing versions under the same feedback habits, not the accuracy on all traffic. An
"unknown" answer counts as not matching the true class.

The comparisons are the textbook large-sample ones on two proportions: Wilson's 95%
interval for each, a two-sided two-proportion z-test for "do they differ", and a one-sided
non-inferiority z-test for "the canary is no worse than stable by more than a margin",
which a significance test alone cannot show.
"""

import math
from dataclasses import dataclass

from service.store.database import Database, StoreSchemaError, StoreUnavailableError

Z_95 = 1.959963984540054


@dataclass(frozen=True)
class LiveAccuracy:
    """One version's feedback: how many predictions got a true class, how many were right."""

    labelled: int
    correct: int

    def interval(self) -> tuple[float, float] | None:
        """Wilson's 95% interval of the share right; None without feedback."""
        if not self.labelled:
            return None
        n, share = self.labelled, self.correct / self.labelled
        centre = (share + Z_95 ** 2 / (2 * n)) / (1 + Z_95 ** 2 / n)
        half = (Z_95 / (1 + Z_95 ** 2 / n)) * math.sqrt(
            share * (1 - share) / n + Z_95 ** 2 / (4 * n * n))
        return max(0.0, centre - half), min(1.0, centre + half)

    def describe(self) -> dict:
        """The counts and the interval, as /models and `release status` show them."""
        interval = self.interval()
        return {"labelled": self.labelled, "correct": self.correct,
                "interval_95": [round(bound, 4) for bound in interval] if interval else None}


def live_accuracy(database: Database, model: str | None = None) -> dict[tuple, LiveAccuracy]:
    """(model, version, version_label) -> LiveAccuracy, over the feedback the store keeps."""
    where, parameters = ("WHERE p.model = ?", (model,)) if model is not None else ("", ())
    with database.transaction() as session:
        rows = session.run(
            "SELECT p.model, p.version, COALESCE(p.version_label, 'none'), COUNT(*), "
            "SUM(CASE WHEN p.top1 = f.true_class AND p.answered_unknown = 0 THEN 1 ELSE 0 END) "
            "FROM predictions p "
            f"JOIN feedback f ON f.prediction_id = p.prediction_id {where} "
            "GROUP BY p.model, p.version, COALESCE(p.version_label, 'none')", parameters)
    return {(name, int(version), label): LiveAccuracy(int(count), int(correct or 0))
            for name, version, label, count, correct in rows}


def live_accuracy_or_none(database: Database, model: str | None = None
                          ) -> dict[tuple, LiveAccuracy] | None:
    """live_accuracy(), or None while the store cannot be read (down, or a newer schema):
    what the views show then, instead of an error."""
    try:
        return live_accuracy(database, model)
    except (StoreUnavailableError, StoreSchemaError):
        return None


def per_version(accuracies: dict[tuple, LiveAccuracy], model: str) -> dict[int, LiveAccuracy]:
    """One model's feedback summed over labels, by version."""
    summed: dict[int, LiveAccuracy] = {}
    for (name, version, _), found in accuracies.items():
        if name == model:
            before = summed.get(version, LiveAccuracy(0, 0))
            summed[version] = LiveAccuracy(before.labelled + found.labelled,
                                           before.correct + found.correct)
    return summed


def normal_cdf(z: float) -> float:
    """The standard normal distribution function."""
    return 0.5 * math.erfc(-z / math.sqrt(2))


def two_proportion_test(first: LiveAccuracy, second: LiveAccuracy) -> dict | None:
    """Two-sided z-test that the two shares right are equal (pooled variance); None when
    either has no feedback or the pooled share is 0 or 1 (nothing to tell apart)."""
    if not first.labelled or not second.labelled:
        return None
    pooled = (first.correct + second.correct) / (first.labelled + second.labelled)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / first.labelled + 1 / second.labelled))
    difference = second.correct / second.labelled - first.correct / first.labelled
    if spread == 0:
        return None
    z = difference / spread
    p_value = 2 * (1 - normal_cdf(abs(z)))
    return {"difference": round(difference, 4), "z": round(z, 3), "p_value": round(p_value, 4),
            "significant_at_0_05": p_value < 0.05}


def non_inferiority_test(stable: LiveAccuracy, canary: LiveAccuracy, margin: float,
                         alpha: float = 0.05) -> dict:
    """One-sided z-test of H0: canary <= stable - margin, against the canary being no worse
    than stable by more than `margin` (unpooled variance, as for a non-zero margin)."""
    p_stable, p_canary = stable.correct / stable.labelled, canary.correct / canary.labelled
    variance = (p_stable * (1 - p_stable) / stable.labelled
                + p_canary * (1 - p_canary) / canary.labelled)
    # With no spread at all (every answer right, or wrong), a floor of one half-error per
    # side keeps the test from passing on certainty it does not have.
    variance = max(variance, 0.25 / stable.labelled ** 2 + 0.25 / canary.labelled ** 2)
    z = (p_canary - p_stable + margin) / math.sqrt(variance)
    p_value = 1 - normal_cdf(z)
    return {"margin": margin, "difference": round(p_canary - p_stable, 4), "z": round(z, 3),
            "p_value": round(p_value, 4), "passed": p_value < alpha}


def evidence(stable: LiveAccuracy, canary: LiveAccuracy, min_feedback: int,
             margin: float) -> tuple[bool, str]:
    """Whether the feedback shows the canary no worse than stable by more than `margin`:
    both have at least `min_feedback` labelled predictions and the non-inferiority test
    passes; and the reason, either way."""
    for name, found in (("stable", stable), ("the canary", canary)):
        if found.labelled < min_feedback:
            return False, (f"{name} has {found.labelled} predictions with feedback; at least "
                           f"{min_feedback} are needed (RELEASE_MIN_FEEDBACK)")
    test = non_inferiority_test(stable, canary, margin)
    shares = (f"canary {canary.correct}/{canary.labelled} right, stable "
              f"{stable.correct}/{stable.labelled}")
    if not test["passed"]:
        return False, (f"the feedback does not show the canary within {margin:g} of stable "
                       f"({shares}; one-sided non-inferiority test p={test['p_value']:g}, "
                       "needs < 0.05)")
    return True, (f"the canary is no worse than stable by more than {margin:g} ({shares}; "
                  f"non-inferiority p={test['p_value']:g})")


def describe_comparison(stable: LiveAccuracy, canary: LiveAccuracy) -> list[str]:
    """Lines for a person: both versions' counts and intervals, and whether they differ."""
    lines = []
    for name, found in (("stable", stable), ("canary", canary)):
        interval = found.interval()
        shown = (f"{found.correct}/{found.labelled} right, 95% interval "
                 f"{interval[0]:.3f}-{interval[1]:.3f}" if interval else "no feedback yet")
        lines.append(f"  {name}: {shown}")
    test = two_proportion_test(stable, canary)
    if test is None:
        lines.append("  difference: not testable yet (a side without feedback, or no spread)")
    else:
        verdict = "significant" if test["significant_at_0_05"] else "not significant"
        lines.append(f"  difference canary - stable: {test['difference']:+.4f}, two-proportion "
                     f"z={test['z']:g}, p={test['p_value']:g}: {verdict} at 0.05")
    return lines
