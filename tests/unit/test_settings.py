from pathlib import Path

import pytest

from backend.settings import Settings, SettingsError, markdown
from tests.conftest import ROOT


def test_env_is_parsed_by_field_type_and_defaults_are_derived():
    s = Settings.from_env({"PORT": "1234", "DATA_DIR": "/srv/aa", "BOOTSTRAP_DEFAULT_BUNDLE": "no",
                           "GATE_MARGIN": "0.05", "UNRELATED": "x", "REDIS_URL": "", "REVIEW_MODE": " Async "})
    assert s.port == 1234 and s.gate_margin == 0.05 and s.bootstrap_default_bundle is False
    assert s.model_dir == Path("/srv/aa/models") and s.database_url == "sqlite:////srv/aa/autoannotator.db"
    assert s.redis_url == "" and not s.auth_enabled and s.review_mode == "async"
    assert Settings.from_env({"MODEL_DIR": "/m"}).model_dir == Path("/m")


def test_to_env_rebuilds_the_same_settings_in_a_child():
    s = Settings.from_env({}, data_dir=Path("/tmp/x"), train_every_n=7, basic_auth_user="u", basic_auth_pass="p",
                          redis_url="redis://h")
    assert Settings.from_env(s.to_env()) == s


@pytest.mark.parametrize(("env", "message"), [
    ({"PORT": "ninety"}, "PORT must be a whole number, not 'ninety'"),
    ({"LLM_TIMEOUT_SECONDS": "soon"}, "LLM_TIMEOUT_SECONDS must be a number"),
    ({"BOOTSTRAP_DEFAULT_BUNDLE": "maybe"}, "BOOTSTRAP_DEFAULT_BUNDLE must be true or false"),
    ({"REVIEW_RULE": "disagreement_or_confidance"}, "REVIEW_RULE must be one of"),
    ({"REVIEW_MODE": "later"}, "REVIEW_MODE must be one of ['inline', 'async']"),
    ({"PLAN_ON_SETUP": "always"}, "PLAN_ON_SETUP must be one of"),
    ({"LLM_AUDIT_SHARE": "1.5"}, "LLM_AUDIT_SHARE must be at most 1"),
    ({"HUMAN_BUDGET_DAY": "-1"}, "HUMAN_BUDGET_DAY must be at least 0"),
    ({"TARGET_ACCURACY": "1"}, "TARGET_ACCURACY must be below 1"),
    ({"TARGET_ACCURACY": "0.9"}, "TARGET_ACCURACY needs evidence from a random audit"),
    ({"TRAIN_EVERY_N": "0"}, "TRAIN_EVERY_N must be at least 1"),
    ({"GATE_MARGIN": "nan"}, "GATE_MARGIN must be a number, not NaN"),
    ({"DEVICE": "gpu"}, "DEVICE must be auto, cpu, cuda or cuda:N"),
    ({"BASIC_AUTH_USER": "u"}, "BASIC_AUTH_USER and BASIC_AUTH_PASS are set together"),
    ({"REVIEW_CLASS_THRESHOLDS": "{Neutral: 0.8}"}, "REVIEW_CLASS_THRESHOLDS"),
])
def test_a_wrong_value_fails_at_start_naming_the_variable(env, message):
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert message in str(err.value)


def test_every_setting_has_a_group_and_a_doc_and_the_configuration_page_is_current():
    page = markdown()
    assert (ROOT / "docs" / "configuration.md").read_text() == page + "\n", \
        "docs/configuration.md is stale: autoannotator settings --markdown > docs/configuration.md"
    for name in Settings.__dataclass_fields__:
        assert f"`{name.upper()}`" in page
