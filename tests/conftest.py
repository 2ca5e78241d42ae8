"""Fixtures shared by every test: a drawn image dataset, a tiny trained model, a real server."""

import os
import shutil

import pytest

from tests import support


@pytest.fixture(scope="session")
def shapes_dataset(tmp_path_factory):
    """A folder of three classes of drawn pictures, made fresh for the test run."""
    return support.make_image_folder(tmp_path_factory.mktemp("data") / "shapes")


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory, shapes_dataset):
    """A models folder holding one tiny published version, models/shapes/1 (trained once)."""
    output = tmp_path_factory.mktemp("trained") / "models"
    support.train_tiny_model(shapes_dataset, output)
    return output


@pytest.fixture
def models_dir(tmp_path, trained_models):
    """A private copy of the trained models folder that a test may add versions to."""
    target = tmp_path / "models"
    shutil.copytree(trained_models, target)
    return target


@pytest.fixture
def start_service(tmp_path):
    """Start the real gunicorn service; every server a test starts is stopped after it."""
    servers = []

    def start(models_dir, wait_ready=True, **settings):
        server = support.RunningService(models_dir, tmp_path / f"service-{len(servers)}.log",
                                        **settings)
        servers.append(server)
        if wait_ready:
            server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, trained_models):
    """One service for a whole test module, with small limits so that they can be hit:
    4 images per request, 2,000,000 bytes per body."""
    models = tmp_path_factory.mktemp("module") / "models"
    shutil.copytree(trained_models, models)
    running = support.RunningService(models, models.parent / "service.log",
                                     max_images_per_request=4, max_request_bytes=2_000_000)
    yield running.wait_ready()
    running.stop()


@pytest.fixture
def service(start_service, models_dir):
    """A running service with the tiny model, ready to answer."""
    return start_service(models_dir)


def pytest_collection_modifyitems(items):
    """Run the fast unit tests first: a quick failure shows at once, and their check that
    nothing imports TensorFlow holds before any slower test has imported it."""
    unit = support.ROOT / "tests" / "unit"
    items.sort(key=lambda item: unit not in item.path.parents)


def pytest_report_header(config):
    """Say which optional tools were found, so skipped tests are no surprise."""
    return [f"docker engine: {'yes' if support.docker_engine_answers() else 'no'}",
            f"chromium: {'yes' if os.path.exists(support.CHROMIUM) else 'no'}",
            f"kubectl: {'yes' if shutil.which('kubectl') else 'no'}"]
