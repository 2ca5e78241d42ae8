"""A version loads only if what it holds fits the worker's share of the memory limit."""

import pytest

from service.models import footprint
from service.models.footprint import (
    MASTER_RESERVE_BYTES,
    MIB,
    FittingLoader,
    memory_limit_bytes,
    worker_share_bytes,
)
from service.models.inference import ModelLoadError, ModelTooLargeError
from tests.unit.fakes import ColourModel


def test_the_setting_wins_over_the_cgroup(monkeypatch, tmp_path):
    limit = tmp_path / "memory.max"
    limit.write_text("805306368\n")
    monkeypatch.setattr(footprint, "CGROUP_LIMIT_FILES", (str(limit),))
    assert memory_limit_bytes(0) == 805306368
    assert memory_limit_bytes(300) == 300 * MIB


@pytest.mark.parametrize("text", ["max\n", "9223372036854771712\n"])
def test_an_unlimited_cgroup_means_no_limit(monkeypatch, tmp_path, text):
    limit = tmp_path / "memory.max"
    limit.write_text(text)
    monkeypatch.setattr(footprint, "CGROUP_LIMIT_FILES", (str(limit),))
    assert memory_limit_bytes(0) is None


def test_without_a_cgroup_file_there_is_no_limit(monkeypatch, tmp_path):
    monkeypatch.setattr(footprint, "CGROUP_LIMIT_FILES", (str(tmp_path / "absent"),))
    assert memory_limit_bytes(0) is None


def test_each_worker_gets_its_share_after_the_masters_reserve():
    assert worker_share_bytes(None, 2) is None
    assert worker_share_bytes(300 * MIB, 2) == (300 * MIB - MASTER_RESERVE_BYTES) // 2
    assert worker_share_bytes(10 * MIB, 2) == 0


def loader(share, needed, monkeypatch, held=100 * MIB):
    """A FittingLoader over fakes: the trial says `needed`, the process holds `held`."""
    monkeypatch.setattr(footprint, "resident_bytes", lambda: held)
    loaded = []

    def load(path):
        loaded.append(path)
        return ColourModel()

    return FittingLoader(load, share, lambda path: needed), loaded


def test_a_version_that_fits_is_loaded(monkeypatch):
    load, loaded = loader(share=120 * MIB, needed=20 * MIB, monkeypatch=monkeypatch)
    assert isinstance(load("models/colours/7"), ColourModel)
    assert loaded == ["models/colours/7"]


def test_a_version_that_would_not_fit_is_refused_unloaded_with_the_figures(monkeypatch):
    load, loaded = loader(share=120 * MIB, needed=21 * MIB, monkeypatch=monkeypatch)
    with pytest.raises(ModelTooLargeError, match="needs 21 MiB.*holds 100 MiB of its 120 MiB"):
        load("models/colours/8")
    assert loaded == []
    assert ModelTooLargeError("x").kind == "too_large" and ModelLoadError("x").kind == "load_failed"


def test_without_a_limit_no_trial_is_made(monkeypatch):
    def no_trial(path):
        raise AssertionError("no trial without a limit")

    monkeypatch.setattr(footprint, "resident_bytes", lambda: 0)
    load = FittingLoader(lambda path: ColourModel(), None, no_trial)
    assert isinstance(load("models/colours/7"), ColourModel)


def test_a_version_whose_upper_bound_fits_loads_without_a_trial(monkeypatch):
    def no_trial(path):
        raise AssertionError("the bound fits: no trial")

    monkeypatch.setattr(footprint, "resident_bytes", lambda: 100 * MIB)
    load = FittingLoader(lambda path: ColourModel(), 150 * MIB, no_trial, lambda path: 50 * MIB)
    assert isinstance(load("models/colours/7"), ColourModel)


def test_a_bound_that_does_not_fit_asks_the_trial(monkeypatch):
    monkeypatch.setattr(footprint, "resident_bytes", lambda: 100 * MIB)
    trials = []
    load = FittingLoader(lambda path: ColourModel(), 150 * MIB,
                         lambda path: trials.append(path) or 20 * MIB, lambda path: 60 * MIB)
    assert isinstance(load("models/colours/7"), ColourModel) and trials == ["models/colours/7"]


def test_a_file_larger_than_what_is_left_is_refused_without_a_trial(monkeypatch, tmp_path):
    (tmp_path / "model.tflite").write_bytes(bytes(60 * MIB))

    def no_trial(path):
        raise AssertionError("it cannot fit: no trial")

    monkeypatch.setattr(footprint, "resident_bytes", lambda: 100 * MIB)
    load = FittingLoader(lambda path: ColourModel(), 150 * MIB, no_trial, lambda path: 0)
    with pytest.raises(ModelTooLargeError, match="needs 60 MiB"):
        load(str(tmp_path))
