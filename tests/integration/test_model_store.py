"""The model store serves the newest loadable version, and says why it skips the others."""

import numpy as np
import pytest

from service.model_store import ModelLoadError, ModelState, ModelStore, ServingModel
from tests.support import publish_copy


def test_the_store_serves_the_highest_version_and_swaps_to_a_newer_one(models_dir):
    store = ModelStore(models_dir / "shapes")
    assert store.refresh() and store.current.version == 1 and store.state == "ready"
    assert not store.refresh()
    publish_copy(models_dir, 2)
    old = store.current
    assert store.refresh() and store.current.version == 2
    # The old version stays usable for requests that already hold it.
    assert old.infer(np.zeros((1, 16, 16, 3), np.uint8)).shape == (1, 3)


def test_a_broken_version_is_skipped_and_the_old_one_keeps_serving(models_dir):
    store = ModelStore(models_dir / "shapes")
    store.refresh()
    publish_copy(models_dir, 2, break_model=True)
    assert not store.refresh()
    assert store.current.version == 1 and store.state == ModelState.READY
    publish_copy(models_dir, 3)
    assert store.refresh() and store.current.version == 3


def test_at_start_a_broken_newest_version_falls_back_to_the_one_below(models_dir):
    publish_copy(models_dir, 2, break_model=True)
    store = ModelStore(models_dir / "shapes")
    store.refresh()
    assert store.current.version == 1


def test_a_version_without_model_tflite_is_skipped_with_the_reason(models_dir, caplog):
    versions = models_dir / "shapes"
    converted = (versions / "1" / "model.tflite").read_bytes()
    (versions / "1" / "model.tflite").unlink()
    store = ModelStore(versions)
    with caplog.at_level("ERROR", logger="service.model_store"):
        assert not store.refresh()
    assert store.current is None and store.state == ModelState.LOAD_FAILED
    assert "version 1 was skipped: it has no model.tflite" in store.reason
    assert "python -m model_training.export" in store.reason
    [record] = caplog.records
    assert record.event == "model_load_failed" and "no model.tflite" in record.reason
    # Nothing in the reason names a path on the server.
    assert str(models_dir) not in store.reason
    # Unchanged, it is not tried (nor logged) again; once the file is added, it is served.
    caplog.clear()
    assert not store.refresh() and not caplog.records
    (versions / "1" / "model.tflite").write_bytes(converted)
    assert store.refresh() and store.current.version == 1 and store.reason == ""


def test_empty_and_unfinished_folders_are_not_served(models_dir):
    versions = models_dir / "shapes"
    (versions / ".tmp-5").mkdir()
    (versions / "notes").mkdir()
    (versions / "4").mkdir()
    store = ModelStore(versions)
    assert store.refresh() and store.current.version == 1


def test_metadata_that_contradicts_the_model_is_refused(models_dir):
    publish_copy(models_dir, 2, metadata_changes={"classes": ["only", "two"]})
    with pytest.raises(ModelLoadError, match="2 classes"):
        ServingModel(models_dir / "shapes" / "2")


def test_an_empty_folder_reports_that_no_model_was_published(tmp_path):
    store = ModelStore(tmp_path / "nothing-here")
    assert not store.refresh()
    assert store.current is None and store.state == "no_model"
    assert "no model version" in store.reason


def test_inference_returns_one_probability_row_per_image(models_dir):
    model = ServingModel(models_dir / "shapes" / "1", warm_batch_size=4)
    scores = model.infer(np.random.default_rng(0).integers(0, 255, (5, 16, 16, 3), np.uint8))
    assert scores.shape == (5, 3)
    assert np.allclose(scores.sum(axis=1), 1, atol=1e-4)
    assert model.describe()["version"] == 1 and model.describe()["loaded_at"]


def test_health_ready_gives_the_reason_a_version_is_skipped(models_dir):
    from service.app import create_app
    from service.config import Settings

    (models_dir / "shapes" / "1" / "model.tflite").unlink()
    app = create_app(Settings(model_dir=str(models_dir), model_name="shapes"),
                     start_model_store=False)
    app.extensions["model_store"].refresh()
    response = app.test_client().get("/health/ready")
    assert response.status_code == 503
    assert response.get_json()["status"] == "load_failed"
    assert "version 1 was skipped: it has no model.tflite" in response.get_json()["reason"]
