"""The "unknown" answer: an image whose top probability is below the version's threshold.

Each version's metadata.json carries `min_confidence`, chosen by training
(model_training/ood.py); a version without one is never unknown. A request may give its own
(`?min_confidence=` on /predict, the request parameter "min_confidence" on V2). An unknown
prediction keeps its confidence and its top_k: only its label is withheld.
"""

import numpy as np

PARAMETER = "min_confidence"


class ThresholdError(ValueError):
    """A min_confidence that is not a number from 0 to 1; the message says so."""


def parse_threshold(raw: object, where: str = PARAMETER) -> float:
    """A min_confidence given as a number or text: a number from 0 to 1."""
    if isinstance(raw, bool):
        raise ThresholdError(f"{where} must be a number from 0 to 1, not {raw!r}.")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0 <= value <= 1:  # NaN fails too
        raise ThresholdError(f"{where} must be a number from 0 to 1, not {str(raw)[:40]!r}.")
    return value


def version_threshold(metadata: dict) -> float:
    """A version's own min_confidence (0, never unknown, when metadata.json has none)."""
    raw = metadata.get(PARAMETER)
    return 0.0 if raw is None else parse_threshold(raw, f"metadata.json's {PARAMETER}")


def unknown_mask(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """Per image, whether its top probability is below `threshold`."""
    return probabilities.max(axis=1) < threshold


def prediction(ranked: list[dict], unknown: bool) -> dict:
    """One image's answer from its ranked labels: the best, or no label when unknown."""
    best = ranked[0]
    return {"label": None if unknown else best["label"], "confidence": best["confidence"],
            "unknown": bool(unknown), "top_k": ranked}
