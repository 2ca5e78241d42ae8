"""Settings come from the environment, with safe defaults and clear refusals."""

import pytest

from service.config import Settings, SettingsError


def test_defaults_serve_the_shipped_model_on_port_8000():
    settings = Settings.from_env({})
    assert (settings.port, settings.model_dir, settings.model_name) == (8000, "models", "cifar10")
    assert settings.api_key == "" and settings.default_top_k == 3


def test_each_setting_is_read_from_its_upper_case_variable():
    settings = Settings.from_env({"PORT": "9000", "BATCH_MAX_WAIT_MS": "2.5", "API_KEY": "s3cret",
                                  "MODEL_DIR": "/srv/models", "MODEL_NAME": "flowers",
                                  "MAX_IMAGES_PER_REQUEST": " 4 ", "LOG_LEVEL": ""})
    assert settings.port == 9000 and settings.batch_max_wait_ms == 2.5
    assert settings.api_key == "s3cret" and settings.max_images_per_request == 4
    assert (settings.model_dir, settings.model_name) == ("/srv/models", "flowers")
    assert settings.log_level == "info"


@pytest.mark.parametrize("variable, value, words", [
    ("PORT", "eighty", "PORT must be a int"),
    ("WORKERS", "0", "WORKERS must be at least 1"),
    ("BATCH_MAX_WAIT_MS", "-1", "BATCH_MAX_WAIT_MS must not be negative"),
    ("MODEL_POLL_SECONDS", "0", "MODEL_POLL_SECONDS must be above 0"),
    ("LOG_LEVEL", "loud", "LOG_LEVEL must be"),
    ("TRUSTED_PROXY_HOPS", "-1", "TRUSTED_PROXY_HOPS must not be negative"),
    ("PIN_WORKERS", "2", "PIN_WORKERS must be 1 .on. or 0 .off."),
    ("METRICS_ALLOW", "10.0.0.0/33", "METRICS_ALLOW must be an address, a CIDR range or all"),
    ("METRICS_ALLOW", "everyone", "METRICS_ALLOW must be an address, a CIDR range or all"),
])
def test_unusable_values_are_refused_with_the_variable_named(variable, value, words):
    with pytest.raises(SettingsError, match=words):
        Settings.from_env({variable: value})


def test_an_api_key_and_a_key_file_together_are_refused():
    # The environment's key could not be rotated away with the file's keys.
    with pytest.raises(SettingsError, match="Set API_KEY or API_KEY_FILE, not both"):
        Settings.from_env({"API_KEY": "s3cret", "API_KEY_FILE": "/run/secrets/api_keys"})
    assert Settings.from_env({"API_KEY_FILE": "/run/secrets/api_keys"}).requires_api_key
    assert not Settings.from_env({"API_KEY": " ", "API_KEY_FILE": ""}).requires_api_key
