"""Settings: precedence, parsing, validation, and that every setting is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cutout.app import create_app, secret_key
from cutout.config import DEFAULTS, ENV_FIELDS, Settings
from cutout.errors import ConfigError, ModelNotFetched
from tests.conftest import ROOT
from tests.helpers import load_script


def test_defaults_match_the_seed() -> None:
    settings = Settings.from_env(environ={}, dotenv_path=None)
    assert settings.user_limit == 10 and settings.port == 5000
    assert settings.rapid_api_host == "background-removal.p.rapidapi.com"
    assert settings.engine == "local" and settings.model == "isnet" and settings.runtime == "auto"
    assert settings.mongo_uri is None and settings.secret_key is None


def test_environment_overrides_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("USER_LIMIT=3\nAPP_SECRET_KEY=from-file\nCUTOUT_MAX_UPLOAD_MB=2.5\n")
    settings = Settings.from_env(environ={"USER_LIMIT": "7"}, dotenv_path=dotenv)
    assert settings.user_limit == 7
    assert settings.secret_key == "from-file"
    assert settings.max_upload_bytes == int(2.5 * 1024 * 1024)


def test_seed_flask_env_means_development() -> None:
    assert Settings.from_env(environ={"FLASK_ENV": "development"}, dotenv_path=None).env == (
        "development"
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("USER_LIMIT", "ten", "USER_LIMIT='ten' is not a valid int"),
        ("USER_LIMIT", "0", "USER_LIMIT must be at least 1"),
        ("CUTOUT_ENGINE", "magic", "CUTOUT_ENGINE must be one of local, objectcut"),
        ("CUTOUT_RUNTIME", "tensorflow", "CUTOUT_RUNTIME must be one of"),
        ("CUTOUT_PNG_COMPRESSION", "12", "between 0 and 9"),
        ("CUTOUT_MAX_UPLOAD_MB", "-1", "must be positive"),
        ("CUTOUT_URL_ALLOWED_NETWORKS", "10.0.0.0/8, nonsense", "CUTOUT_URL_ALLOWED_NETWORKS"),
        ("CUTOUT_URL_TIMEOUT", "0", "CUTOUT_URL_TIMEOUT must be positive"),
        ("CUTOUT_API_RATE_LIMIT", "lots", "CUTOUT_API_RATE_LIMIT='lots' is not a rate limit"),
    ],
)
def test_bad_values_are_config_errors(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.from_env(environ={name: value}, dotenv_path=None)


def test_the_default_rate_limits_and_networks_parse() -> None:
    """Validation skips parsing the defaults (the CLI need not import `limits` or urllib3), so
    they must parse."""
    from limits import parse_many

    rate_limits = [f for f in ENV_FIELDS if f.metadata["env"].endswith("RATE_LIMIT")]
    assert len(rate_limits) == 4
    for field in rate_limits:
        assert parse_many(DEFAULTS[field.metadata["env"]]), field.name
    assert Settings.from_env(environ={}, dotenv_path=None).fetch_policy  # the default networks


def test_secret_key_is_required_in_production(tmp_path: Path) -> None:
    production = Settings.from_env(environ={"CUTOUT_DATA_DIR": str(tmp_path)}, dotenv_path=None)
    with pytest.raises(ConfigError, match="APP_SECRET_KEY is not set"):
        secret_key(production)
    with pytest.raises(ConfigError, match="APP_SECRET_KEY"):
        create_app(production)


def test_development_key_is_generated_once_and_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dev = Settings.from_env(
        environ={"CUTOUT_ENV": "development", "CUTOUT_DATA_DIR": str(tmp_path)}, dotenv_path=None
    )
    first = secret_key(dev)
    assert len(first) >= 32 and secret_key(dev) == first  # survives a restart
    assert "APP_SECRET_KEY is not set" in caplog.text
    assert (tmp_path / "dev-secret-key").stat().st_mode & 0o077 == 0


def test_missing_model_fails_at_start_naming_the_command(tmp_path: Path) -> None:
    settings = Settings.from_env(
        environ={
            "APP_SECRET_KEY": "x" * 32,
            "CUTOUT_MODEL_DIR": str(tmp_path / "none"),
            "CUTOUT_DATA_DIR": str(tmp_path / "data"),
        },
        dotenv_path=None,
    )
    with pytest.raises(ModelNotFetched, match="cutout models fetch isnet"):
        create_app(settings)


def test_every_setting_is_in_env_example_and_the_docs() -> None:
    """.env.example by hand; the docs' table is generated from the same metadata."""
    settings_table = load_script("mkdocs_hooks").settings_table

    example = (ROOT / ".env.example").read_text()
    table = settings_table()
    assert "<!-- cutout:settings -->" in (ROOT / "docs/reference/configuration.md").read_text()
    for field in ENV_FIELDS:
        env = field.metadata["env"]
        assert re.search(rf"^#? ?{env}=", example, re.M), f"{env} missing from .env.example"
        assert f"| `{env}` |" in table and field.metadata["help"] in table
