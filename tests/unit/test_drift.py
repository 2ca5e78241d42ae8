"""Drift: the PSI, the sliding window, and the gauges a served version gets."""

import math

import numpy as np
import pytest
from prometheus_client import REGISTRY

from service.observability import drift
from service.observability.drift import DriftMonitor, DriftWindow, psi, reference_of
from tests.unit.fakes import ColourModel


def test_psi_is_zero_for_the_same_mix_and_grows_as_it_moves():
    assert psi([25, 25, 50], [0.25, 0.25, 0.5]) == pytest.approx(0)
    moved = psi([50, 25, 25], [0.25, 0.25, 0.5])
    expected = (0.5 - 0.25) * math.log(2) + (0.25 - 0.5) * math.log(0.5)
    assert moved == pytest.approx(expected)
    # A class never seen now is floored, not infinite.
    assert math.isfinite(psi([0, 50, 50], [0.2, 0.4, 0.4]))


def test_the_reference_is_the_class_mix_and_confidence_shares():
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.55, 0.45]])
    reference = reference_of(probabilities)
    assert reference["images"] == 4 and reference["class_mix"] == [0.75, 0.25]
    assert reference["confidence_edges"] == list(drift.CONFIDENCE_EDGES)
    assert sum(reference["confidence"]) == pytest.approx(1)
    # 0.9 -> [0.9, 0.95), 0.6 -> [0.5, 0.7), 0.8 -> [0.8, 0.9), 0.55 -> [0.5, 0.7)
    assert reference["confidence"] == [0.0, 0.0, 0.5, 0.0, 0.25, 0.25, 0.0, 0.0]
    assert drift.confidence_bins(np.array([1.0, 0.0]))[0] == len(drift.CONFIDENCE_EDGES) - 2


def test_the_window_forgets_the_oldest_answers():
    window = DriftWindow(3, 2)
    window.add([0, 0, 0], [1, 1, 1])
    window.add([1, 1], [2, 2])
    assert window.classes == [1, 2] and window.bins[1:3] == [1, 2]


class ReferencedModel(ColourModel):
    """A stand-in version with a drift reference: its held-out answers were all red."""

    def __init__(self, version):
        super().__init__("drifting", version)
        self.metadata = {"drift_reference": {
            "images": 100, "class_mix": [0.0, 0.0, 1.0],
            "confidence_edges": list(drift.CONFIDENCE_EDGES),
            "confidence": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]}}


def gauge(name, **labels):
    return REGISTRY.get_sample_value(name, labels)


def test_a_served_version_gets_its_gauges_and_one_without_a_reference_none():
    monitor = DriftMonitor(100)
    model = ReferencedModel(1)
    red = np.tile([[0.0, 0.0, 0.995]], (drift.UPDATE_EVERY, 1))
    monitor.observe("drifting", model, red)
    assert gauge("model_drift_psi", model="drifting", version="1", aspect="class_mix") == \
        pytest.approx(0)
    assert gauge("model_drift_window_images", model="drifting", version="1") == drift.UPDATE_EVERY
    blue = np.tile([[0.6, 0.2, 0.2]], (drift.UPDATE_EVERY, 1))
    monitor.observe("drifting", model, blue)
    assert gauge("model_drift_psi", model="drifting", version="1", aspect="class_mix") > 1
    assert gauge("model_drift_psi", model="drifting", version="1", aspect="confidence") > 1
    monitor.observe("drifting", ColourModel("drifting", 2), blue)
    assert gauge("model_drift_psi", model="drifting", version="2", aspect="class_mix") is None


def test_a_window_of_zero_turns_drift_off():
    DriftMonitor(0).observe("off", ReferencedModel(3), np.tile([[0.6, 0.2, 0.2]], (60, 1)))
    assert gauge("model_drift_window_images", model="drifting", version="3") is None
