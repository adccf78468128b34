from pathlib import Path

from backend.settings import Settings


def test_env_is_parsed_by_field_type_and_defaults_are_derived():
    s = Settings.from_env({"PORT": "1234", "DATA_DIR": "/srv/aa", "BOOTSTRAP_DEFAULT_BUNDLE": "no",
                           "GATE_MARGIN": "0.05", "UNRELATED": "x", "REDIS_URL": ""})
    assert s.port == 1234 and s.gate_margin == 0.05 and s.bootstrap_default_bundle is False
    assert s.model_dir == Path("/srv/aa/models") and s.database_url == "sqlite:////srv/aa/autoannotator.db"
    assert s.redis_url == "" and not s.auth_enabled
    assert Settings.from_env({"MODEL_DIR": "/m"}).model_dir == Path("/m")


def test_to_env_rebuilds_the_same_settings_in_a_child():
    s = Settings.from_env({}, data_dir=Path("/tmp/x"), train_every_n=7, basic_auth_user="u", redis_url="redis://h")
    assert Settings.from_env(s.to_env()) == s
