"""The model repository with stand-in versions: several models, policies, and bad files."""

import json
import logging
import shutil

import pytest

from service.models.artifact import POLICY_FILE
from service.models.repository import ModelRepository, ModelState
from service.models.routing import RoutingError
from tests.unit.fakes import ColourLoader, publish_fake


@pytest.fixture
def models(tmp_path):
    """A models folder: colours with versions 1-3, and shapes with version 1."""
    folder = tmp_path / "models"
    for version in (1, 2, 3):
        publish_fake(folder, "colours", version)
    publish_fake(folder, "shapes", 1)
    return folder


def repository_of(folder, loader=None, default="colours"):
    repository = ModelRepository(str(folder), default, load=loader or ColourLoader())
    repository.refresh()
    return repository


def write_policy(folder, document, name="colours"):
    text = document if isinstance(document, str) else json.dumps(document)
    (folder / name / POLICY_FILE).write_text(text)


def served(repository, name="colours", **path):
    """The version number that answers a request for `name` naming `path` (or nothing)."""
    return repository.model(name).route(repository.splitter, **path).model.version


def test_every_model_folder_is_served_under_its_own_name(models):
    repository = repository_of(models)
    assert sorted(repository.models) == ["colours", "shapes"]
    assert served(repository) == 3 and served(repository, "shapes") == 1
    assert repository.readiness() == ("ready", "")
    with pytest.raises(RoutingError, match="Unknown model 'nope': this server serves "
                                           "'colours', 'shapes'") as error:
        repository.model("nope")
    assert error.value.kind == "model_not_found"


def test_without_a_policy_the_newest_version_that_loads_serves(models):
    repository = repository_of(models, ColourLoader(broken={3}))
    assert served(repository) == 2
    described = repository.model("colours").describe()
    assert described["policy"]["source"] == "default"
    states = {entry["version"]: entry for entry in described["versions"]}
    assert states[2]["state"] == "ready" and states[2]["labels"] == ["stable"]
    assert states[3]["state"] == "unavailable" and "failed to load" in states[3]["reason"]
    assert states[1]["reason"].startswith("not loaded: the policy keeps the latest 1")


def test_labels_pin_versions_and_every_labelled_version_stays_loaded(models):
    write_policy(models, {"version_labels": {"stable": 1, "canary": 2, "beta": 3}})
    repository = repository_of(models)
    assert served(repository) == 1
    assert served(repository, label="canary") == 2 and served(repository, label="beta") == 3
    assert served(repository, version="3") == 3
    table = repository.model("colours").table
    assert sorted(table.versions) == [1, 2, 3]


def test_latest_specific_and_all_choose_what_stays_loaded(models):
    for kind, loaded in (({"latest": {"num_versions": 2}}, [2, 3]),
                         ({"specific": {"versions": [1, 3]}}, [1, 3]),
                         ({"all": {}}, [1, 2, 3])):
        write_policy(models, {"model_version_policy": kind})
        repository = repository_of(models)
        assert sorted(repository.model("colours").table.versions) == loaded, kind
        assert served(repository) == max(loaded)


def test_a_version_that_is_not_loaded_is_a_404_listing_the_loaded_ones(models):
    repository = repository_of(models)
    for path, kind, words in (({"version": "1"}, "version_not_found",
                               "Version '1' of model 'colours' is not loaded; loaded versions: 3"),
                              ({"version": "x"}, "version_not_found", "loaded versions: 3"),
                              ({"label": "canary"}, "label_not_found",
                               "has no label 'canary'; its labels: stable (version 3)")):
        with pytest.raises(RoutingError) as error:
            served(repository, **path)
        assert error.value.kind == kind and words in str(error.value)


def test_the_policy_is_reread_when_it_changes(models):
    repository = repository_of(models)
    assert served(repository) == 3
    write_policy(models, {"version_labels": {"stable": 2}})
    assert repository.refresh() and served(repository) == 2
    assert not repository.refresh()
    (models / "colours" / POLICY_FILE).unlink()
    assert repository.refresh() and served(repository) == 3


@pytest.mark.parametrize("content, words", [
    ("{half a file", "serving.json cannot be used: not valid JSON"),
    ({"version_labels": {"stable": 2, "canary": 3}, "canary": {"percent": 250}},
     "from 0 to 100, not 250"),
    ({"version_labels": {"stable": 9}}, "the label 'stable' points at version 9, which does "
                                        "not exist"),
    ({"version_labels": {"stable": 2, "canary": 4}}, "the label 'canary' points at version 4, "
                                                     "which failed to load"),
])
def test_a_bad_policy_keeps_the_last_good_one_and_says_why(models, caplog, content, words):
    publish_fake(models, "colours", 4)
    write_policy(models, {"version_labels": {"stable": 2}})
    repository = repository_of(models, ColourLoader(broken={4}))
    assert served(repository) == 2
    write_policy(models, content)
    with caplog.at_level(logging.ERROR, logger="service.models"):
        repository.refresh()
    assert served(repository) == 2
    model = repository.model("colours")
    assert words in model.policy_problem and model.state == ModelState.READY
    described = model.describe()
    assert words in described["policy"]["problem"] and described["labels"]["stable"] == 2
    rejected = [record for record in caplog.records if record.event == "policy_rejected"]
    assert len(rejected) == 1 and words in rejected[0].reason
    # Logged once, not at every poll; cleared once the file is good again.
    caplog.clear()
    repository.refresh()
    assert not [record for record in caplog.records if record.event == "policy_rejected"]
    write_policy(models, {"version_labels": {"stable": 3}})
    repository.refresh()
    assert served(repository) == 3 and model.policy_problem == ""


def test_a_policy_that_cannot_be_used_at_start_serves_nothing(models):
    write_policy(models, {"version_labels": {"stable": 7}})
    repository = repository_of(models)
    model = repository.model("colours")
    assert model.state == ModelState.POLICY_INVALID and "version 7" in model.reason
    with pytest.raises(RoutingError) as error:
        served(repository)
    assert error.value.kind == "model_not_ready"
    assert repository.readiness()[0] == "policy_invalid"
    # The other model is not affected.
    assert served(repository, "shapes") == 1


def test_a_version_deleted_while_it_serves_keeps_serving_from_memory(models):
    write_policy(models, {"version_labels": {"stable": 2}})
    repository = repository_of(models)
    stable = repository.model("colours").table.stable
    shutil.rmtree(models / "colours" / "2")
    repository.refresh()
    model = repository.model("colours")
    assert model.table.stable is stable and served(repository) == 2
    [entry] = [entry for entry in model.describe()["versions"] if entry["version"] == 2]
    assert "deleted from disk" in entry["reason"]


def test_the_newest_version_deleted_without_a_policy_falls_back_to_the_one_below(models):
    repository = repository_of(models)
    shutil.rmtree(models / "colours" / "3")
    assert repository.refresh() and served(repository) == 2


def test_every_version_gone_keeps_the_last_one_serving(models):
    repository = repository_of(models)
    for version in (1, 2, 3):
        shutil.rmtree(models / "colours" / str(version))
    repository.refresh()
    assert served(repository) == 3


def test_a_failed_version_is_tried_again_only_once_its_folder_changes(models):
    loader = ColourLoader(broken={3})
    repository = repository_of(models, loader)
    assert served(repository) == 2
    loader.broken.clear()
    repository.refresh()
    assert served(repository) == 2
    (models / "colours" / "3" / "new-file").write_text("x")
    repository.refresh()
    assert served(repository) == 3


def test_a_model_folder_removed_is_no_longer_served_and_a_new_one_is(models):
    repository = repository_of(models)
    shutil.rmtree(models / "shapes")
    publish_fake(models, "digits", 1)
    repository.refresh()
    assert sorted(repository.models) == ["colours", "digits"]
    assert served(repository, "digits") == 1


def test_an_unreadable_models_folder_changes_nothing(models, tmp_path):
    repository = repository_of(models)
    repository.model_dir = str(tmp_path / "gone")
    repository.refresh()
    assert sorted(repository.models) == ["colours", "shapes"] and served(repository) == 3


def test_folders_that_are_not_models_or_versions_are_ignored(models):
    (models / ".tmp-x").mkdir()
    (models / "notes.txt").write_text("x")
    (models / "colours" / ".tmp-4").mkdir()
    (models / "colours" / "5").mkdir()
    repository = repository_of(models)
    assert sorted(repository.models) == ["colours", "shapes"] and served(repository) == 3


def test_the_default_model_is_loaded_first(models):
    order = []
    loader = ColourLoader()

    def load(path):
        order.append(path)
        return loader(path)

    repository_of(models, load, default="shapes")
    assert "shapes" in order[0]


def test_a_refused_policy_loads_nothing_again_until_something_changes(models, caplog):
    publish_fake(models, "colours", 4)
    loads = []
    loader = ColourLoader()

    def load(path):
        loads.append(path)
        return loader(path)

    write_policy(models, {"version_labels": {"stable": 1}})
    repository = repository_of(models, load)
    write_policy(models, {"version_labels": {"stable": 2, "canary": 9}})
    repository.refresh()
    after_refusal = len(loads)
    for _ in range(3):
        repository.refresh()
    assert len(loads) == after_refusal and served(repository) == 1
    publish_fake(models, "colours", 9)
    repository.refresh()
    assert served(repository) == 2 and served(repository, label="canary") == 9


def test_without_a_stable_label_the_canary_is_never_stable(models):
    write_policy(models, {"version_labels": {"canary": 3}, "canary": {"percent": 50}})
    repository = repository_of(models)
    assert served(repository, label="stable") == 2 and served(repository, label="canary") == 3
    for version in (1, 2):
        shutil.rmtree(models / "colours" / str(version))
    write_policy(models, {"version_labels": {"canary": 3}})
    repository.refresh()
    model = repository.model("colours")
    assert "the canary is the only version that loads" in model.policy_problem
    assert served(repository, label="stable") == 2


def test_a_version_too_large_to_fit_is_refused_and_the_stable_keeps_serving(models,
                                                                          monkeypatch):
    from service.models import footprint
    from service.models.footprint import MIB, FittingLoader

    monkeypatch.setattr(footprint, "resident_bytes", lambda: 100 * MIB)
    sizes = {1: 10 * MIB, 2: 10 * MIB, 3: 10 * MIB, 4: 500 * MIB}
    trial = lambda path: sizes[int(path.rsplit("/", 1)[-1])]  # noqa: E731
    repository = repository_of(models, FittingLoader(ColourLoader(), 150 * MIB, trial))
    assert served(repository) == 3
    publish_fake(models, "colours", 4)  # a retrain that needs more than the share
    repository.refresh()
    model = repository.model("colours")
    assert served(repository) == 3 and model.state == ModelState.READY
    states = {entry["version"]: entry for entry in model.describe()["versions"]}
    assert "would not fit: it needs 500 MiB" in states[4]["reason"]
    assert states[3]["memory_bytes"] == 0  # the readings did not move: nothing measured
    assert model.refused() == {"load_failed": 0, "too_large": 1}


def test_a_promoted_stable_too_large_to_fit_gives_way_to_the_one_before_it(models, monkeypatch):
    from service.models import footprint
    from service.models.footprint import MIB, FittingLoader

    monkeypatch.setattr(footprint, "resident_bytes", lambda: 100 * MIB)
    publish_fake(models, "colours", 4)
    write_policy(models, {"version_labels": {"stable": 4},
                          "history": [{"stable": 3, "until": "2026-12-07T10:00:00+00:00"}]})
    sizes = {1: 10 * MIB, 2: 10 * MIB, 3: 10 * MIB, 4: 500 * MIB}
    trial = lambda path: sizes[int(path.rsplit("/", 1)[-1])]  # noqa: E731
    # A worker that starts now (as a restarted replica does) still has a stable to serve.
    repository = repository_of(models, FittingLoader(ColourLoader(), 150 * MIB, trial))
    model = repository.model("colours")
    assert served(repository) == 3 and model.state == ModelState.READY
    states = {entry["version"]: entry for entry in model.describe()["versions"]}
    assert "would not fit" in states[4]["reason"] and "stable is version 3" in states[4]["reason"]
    assert states[3]["labels"] == ["stable"]
