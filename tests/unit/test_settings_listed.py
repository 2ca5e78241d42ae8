"""One list of settings: config.py, the README's settings and docker-compose.yml's api agree."""

import dataclasses
import re

import pytest
import yaml

from service.config import Settings
from tests.support import ROOT

DEFAULTS = Settings()
NAMES = {field.name.upper(): field.name for field in dataclasses.fields(Settings)}

# The settings compose gives a value of its own, on purpose; every other one it passes on
# from the user's environment or .env as ${NAME:-}, so that empty keeps the service's default.
COMPOSE_OWN = {
    # Where the models volume is mounted in the container.
    "MODEL_DIR": "/app/models",
    # The api listens on fixed ports inside the project network; API_PORT and
    # API_GRPC_PORT are the proxy's.
    "PORT": str(DEFAULTS.port),
    "GRPC_PORT": str(DEFAULTS.grpc_port),
    # Behind compose's proxy there is exactly one hop to trust; without one, none.
    "TRUSTED_PROXY_HOPS": "${TRUSTED_PROXY_HOPS:-1}",
    # Shared with the trainer, which publishes under this name; the default is the service's.
    "MODEL_NAME": f"${{MODEL_NAME:-{DEFAULTS.model_name}}}",
}
# Settings compose leaves out: a container must listen on every interface (the default)
# for its published port to reach it.
COMPOSE_LEAVES_OUT = {"HOST"}

TABLE_ROW = re.compile(r"^\| `([A-Z0-9_]+)` \| ([^|]*) \|")


def readme_table():
    """{variable: default as written} from the table rows of the README's "Settings"."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    return {match[1]: match[2].strip() for match in map(TABLE_ROW.match, section.splitlines())
            if match}


def compose_environment():
    """The api service's environment in docker-compose.yml, as {name: value}."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    environment = compose["services"]["api"]["environment"]
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {name: str(value) for name, value in environment.items()}


def test_the_readme_lists_every_setting_and_no_other():
    assert sorted(readme_table()) == sorted(NAMES)


@pytest.mark.parametrize("variable, written", sorted(readme_table().items()))
def test_the_readme_states_each_default_as_config_py_has_it(variable, written):
    default = getattr(DEFAULTS, NAMES[variable]) if variable in NAMES else None
    if written == "(none)":
        assert default in ("", None)
    elif written.startswith("`") and written.endswith("`"):
        assert type(default)(written.strip("`")) == default
    else:
        pytest.fail(f"write {variable}'s default as `value` or (none), not {written!r}")


def test_compose_passes_on_every_setting_but_those_it_leaves_out():
    assert sorted(compose_environment()) == sorted(set(NAMES) - COMPOSE_LEAVES_OUT)


def test_compose_keeps_the_service_defaults_except_where_it_means_not_to():
    expected = {name: COMPOSE_OWN.get(name, f"${{{name}:-}}")
                for name in set(NAMES) - COMPOSE_LEAVES_OUT}
    assert compose_environment() == expected
