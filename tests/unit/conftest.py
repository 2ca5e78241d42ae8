"""Unit tests run in this process, without gunicorn and without TensorFlow."""

import sys

import pytest

from service.app import create_app
from service.config import Settings
from tests.unit.fakes import ColourModel, FakeStore

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
def make_client():
    """A Flask test client of the real app whose model store is a FakeStore."""

    def make(store=None, **settings):
        app = create_app(Settings(**settings), start_model_store=False)
        app.extensions["model_store"] = FakeStore(ColourModel()) if store is None else store
        return app.test_client()

    return make


@pytest.fixture
def client(make_client):
    """The app serving a ColourModel, with limits small enough to hit."""
    return make_client(max_images_per_request=4, max_request_bytes=2_000_000)
