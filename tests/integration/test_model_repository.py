"""The repository with real LiteRT versions: the newest that loads serves; why others do not."""

import numpy as np
import pytest

from service.models.inference import ModelLoadError, ServingModel
from service.models.repository import ModelRepository, ModelState
from tests.support import publish_copy


def repository_of(models_dir):
    return ModelRepository(str(models_dir), "shapes")


def serving(repository):
    stable = repository.default.table.stable
    return stable.version if stable else None


def test_the_highest_version_serves_and_a_newer_one_swaps_in(models_dir):
    repository = repository_of(models_dir)
    assert repository.refresh() and serving(repository) == 1
    assert repository.default.state == "ready"
    assert not repository.refresh()
    publish_copy(models_dir, 2)
    old = repository.default.table.stable
    assert repository.refresh() and serving(repository) == 2
    # The old version stays usable for requests that already hold it.
    assert old.infer(np.zeros((1, 16, 16, 3), np.uint8)).shape == (1, 3)


def test_a_broken_version_is_skipped_and_the_old_one_keeps_serving(models_dir):
    repository = repository_of(models_dir)
    repository.refresh()
    publish_copy(models_dir, 2, break_model=True)
    repository.refresh()
    assert serving(repository) == 1 and repository.default.state == ModelState.READY
    publish_copy(models_dir, 3)
    assert repository.refresh() and serving(repository) == 3


def test_at_start_a_broken_newest_version_falls_back_to_the_one_below(models_dir):
    publish_copy(models_dir, 2, break_model=True)
    repository = repository_of(models_dir)
    repository.refresh()
    assert serving(repository) == 1


def test_a_version_without_model_tflite_is_skipped_with_the_reason(models_dir, caplog):
    versions = models_dir / "shapes"
    converted = (versions / "1" / "model.tflite").read_bytes()
    (versions / "1" / "model.tflite").unlink()
    repository = repository_of(models_dir)
    with caplog.at_level("ERROR", logger="service.models"):
        assert not repository.refresh()
    model = repository.default
    assert serving(repository) is None and model.state == ModelState.LOAD_FAILED
    assert "version 1 was skipped: it has no model.tflite" in model.reason
    assert "python -m model_training.export" in model.reason
    [record] = caplog.records
    assert record.event == "model_load_failed" and "no model.tflite" in record.reason
    # Nothing in the reason names a path on the server.
    assert str(models_dir) not in model.reason
    # Unchanged, it is not tried (nor logged) again; once the file is added, it is served.
    caplog.clear()
    assert not repository.refresh() and not caplog.records
    (versions / "1" / "model.tflite").write_bytes(converted)
    assert repository.refresh() and serving(repository) == 1 and model.reason == ""


def test_metadata_that_contradicts_the_model_is_refused(models_dir):
    publish_copy(models_dir, 2, metadata_changes={"classes": ["only", "two"]})
    with pytest.raises(ModelLoadError, match="2 classes"):
        ServingModel(models_dir / "shapes" / "2")


def test_an_empty_folder_reports_that_no_model_was_published(tmp_path):
    repository = ModelRepository(str(tmp_path / "nothing-here"), "shapes")
    assert not repository.refresh()
    state, reason = repository.readiness()
    assert state == "no_model" and "no model version" in reason


def test_inference_returns_one_probability_row_per_image(models_dir):
    model = ServingModel(models_dir / "shapes" / "1", warm_batch_size=4)
    scores = model.infer(np.random.default_rng(0).integers(0, 255, (5, 16, 16, 3), np.uint8))
    assert scores.shape == (5, 3)
    assert np.allclose(scores.sum(axis=1), 1, atol=1e-4)
    assert model.describe()["version"] == 1 and model.describe()["loaded_at"]


def test_model_describes_what_a_client_needs_and_no_training_paths(models_dir):
    described = ServingModel(models_dir / "shapes" / "1").describe()
    assert set(described) == {"name", "version", "classes", "input", "metrics", "created_at",
                              "framework", "loaded_at", "min_confidence", "calibration"}
    assert described["name"] == "shapes" and described["input"] == {
        "height": 16, "width": 16, "channels": 3}
    assert "test_accuracy" in described["metrics"]
    assert "confusion_matrix" not in described["metrics"]
    assert str(models_dir) not in str(described) and "data" not in str(described["metrics"])


def test_health_ready_gives_the_reason_a_version_is_skipped(models_dir):
    from service.app import create_app
    from service.config import Settings

    (models_dir / "shapes" / "1" / "model.tflite").unlink()
    app = create_app(Settings(model_dir=str(models_dir), model_name="shapes"),
                     start_models=False)
    app.extensions["model_repository"].refresh()
    response = app.test_client().get("/health/ready")
    assert response.status_code == 503
    assert response.get_json()["status"] == "load_failed"
    assert "version 1 was skipped: it has no model.tflite" in response.get_json()["reason"]
