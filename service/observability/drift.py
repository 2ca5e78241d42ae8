"""Drift: does what a version answers now look like what it answered on its held-out images?

Training writes each version's reference into metadata.json (`drift_reference`): the share of
its held-out test images given each class as top-1, and the shares of their top-1 confidence
in the bins below. Each worker keeps a sliding window of the last DRIFT_WINDOW answers of each
version it serves, and compares the two with the population stability index,
PSI = sum over bins of (now - reference) * ln(now / reference): below 0.1 the mix is about the
same, above 0.25 it has moved (a rule of thumb). Exported as gauges with the window's size, so
that a PSI of a handful of images is read as such. A version without a reference (published
before training wrote one) is not compared.
"""

import collections
import math
import threading

import numpy as np

from service.observability import metrics

# Top-1 confidence bins; the last edge is inclusive.
CONFIDENCE_EDGES = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
# A share of zero would make the PSI infinite: shares are floored at this.
FLOOR = 1e-4
# The gauges are set after this many images of a version (and when its window first fills).
UPDATE_EVERY = 50


def confidence_bins(confidences: np.ndarray) -> np.ndarray:
    """The bin of each top-1 confidence."""
    return np.clip(np.searchsorted(CONFIDENCE_EDGES, confidences, side="right") - 1, 0,
                   len(CONFIDENCE_EDGES) - 2)


def reference_of(probabilities: np.ndarray) -> dict:
    """metadata.json's `drift_reference` for a version's probabilities on held-out images."""
    top1, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
    classes = np.bincount(top1, minlength=probabilities.shape[1]) / len(top1)
    bins = np.bincount(confidence_bins(confidence), minlength=len(CONFIDENCE_EDGES) - 1)
    return {"images": int(len(top1)), "class_mix": [round(float(x), 6) for x in classes],
            "confidence_edges": list(CONFIDENCE_EDGES),
            "confidence": [round(float(x), 6) for x in bins / len(top1)]}


def psi(counts, reference) -> float:
    """The population stability index of observed `counts` against `reference` shares."""
    total = sum(counts)
    value = 0.0
    for count, expected in zip(counts, reference, strict=True):
        actual, expected = max(count / total, FLOOR), max(expected, FLOOR)
        value += (actual - expected) * math.log(actual / expected)
    return value


class DriftWindow:
    """One version's last `size` answers, as class and confidence-bin counts."""

    def __init__(self, size: int, class_count: int):
        self.answers: collections.deque = collections.deque(maxlen=size)
        self.classes = [0] * class_count
        self.bins = [0] * (len(CONFIDENCE_EDGES) - 1)
        self.since_update = 0

    def add(self, top1: list[int], bins: list[int]) -> bool:
        """Take answers in; whether the gauges are due."""
        for answer in zip(top1, bins, strict=True):
            if len(self.answers) == self.answers.maxlen:
                old_class, old_bin = self.answers[0]
                self.classes[old_class] -= 1
                self.bins[old_bin] -= 1
            self.answers.append(answer)
            self.classes[answer[0]] += 1
            self.bins[answer[1]] += 1
        self.since_update += len(top1)
        due = self.since_update >= UPDATE_EVERY or len(self.answers) == self.answers.maxlen
        if due:
            self.since_update = 0
        return due


class DriftMonitor:
    """Every served version's window, in this worker."""

    def __init__(self, window: int):
        self.window = window
        self._windows: dict[tuple[str, int], DriftWindow] = {}
        self._lock = threading.Lock()

    def observe(self, name: str, model, probabilities: np.ndarray) -> None:
        """Add a version's answers to its window; set the gauges now and then."""
        reference = (getattr(model, "metadata", None) or {}).get("drift_reference")
        if not self.window or not _usable(reference, probabilities.shape[1]):
            return
        top1 = probabilities.argmax(axis=1).tolist()
        bins = confidence_bins(probabilities.max(axis=1)).tolist()
        with self._lock:
            key = (name, model.version)
            window = self._windows.setdefault(key, DriftWindow(self.window, len(reference[
                "class_mix"])))
            if not window.add(top1, bins):
                return
            classes, confidence = list(window.classes), list(window.bins)
            size = len(window.answers)
        metrics.record_drift(name, model.version, size, psi(classes, reference["class_mix"]),
                             psi(confidence, reference["confidence"]))


def _usable(reference, class_count: int) -> bool:
    """A reference of this code's bins and of as many classes as the model has."""
    return (isinstance(reference, dict) and isinstance(reference.get("class_mix"), list)
            and len(reference["class_mix"]) == class_count
            and reference.get("confidence_edges") == list(CONFIDENCE_EDGES)
            and isinstance(reference.get("confidence"), list)
            and len(reference["confidence"]) == len(CONFIDENCE_EDGES) - 1)
