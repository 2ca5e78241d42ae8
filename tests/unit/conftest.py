"""Unit tests run in this process, without gunicorn and without TensorFlow."""

import sys

import pytest

from service.app import create_app
from service.config import Settings
from service.models.repository import ModelRepository
from tests.unit.fakes import ColourLoader, publish_fake

HEAVY_MODULES = ("tensorflow", "keras")
HEAVY_BEFORE = pytest.StashKey[set]()


def heavy_modules():
    """Which of HEAVY_MODULES this process has imported."""
    return {name for name in HEAVY_MODULES if name in sys.modules}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Note what was imported before any of the test's fixtures (a trained model, say) ran."""
    item.stash[HEAVY_BEFORE] = heavy_modules()


@pytest.fixture(autouse=True)
def no_tensorflow(request):
    """Fail a unit test that imports TensorFlow: one that needs it belongs under integration."""
    yield
    imported = heavy_modules() - request.node.stash[HEAVY_BEFORE]
    assert not imported, f"this unit test imported {', '.join(sorted(imported))}"


@pytest.fixture
def models_folder(tmp_path):
    """A models folder with one version, colours/7, that a ColourLoader loads."""
    publish_fake(tmp_path / "models", "colours", 7)
    return tmp_path / "models"


@pytest.fixture
def make_client(models_folder):
    """A Flask test client of the real app; its repository loads ColourModels from
    `models_folder` (refreshed once, unless `refresh` is false)."""

    def make(loader=None, refresh=True, **settings):
        settings = {"model_dir": str(models_folder), "model_name": "colours", **settings}
        app = create_app(Settings(**settings), start_models=False)
        repository = ModelRepository(settings["model_dir"], settings["model_name"],
                                     load=loader or ColourLoader())
        if refresh:
            repository.refresh()
        app.extensions["model_repository"] = repository
        return app.test_client()

    return make


@pytest.fixture
def client(make_client):
    """The app serving a ColourModel, with limits small enough to hit."""
    return make_client(max_images_per_request=4, max_request_bytes=2_000_000)
