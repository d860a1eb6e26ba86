"""Settings precedence (defaults < file < environment < flags) and secret handling."""

from __future__ import annotations

from pathlib import Path

import pytest

from advisor.config import ALPACA_PAPER_URL, alpaca_credentials, load_settings
from advisor.errors import ConfigError


def test_defaults_put_the_database_under_the_data_dir() -> None:
    settings = load_settings()
    assert settings.data_dir == Path("var")
    assert settings.resolved_database_url == f"sqlite:///{(Path('var') / 'advisor.db').resolve()}"
    assert settings.resolved_model_dir == Path("var") / "models"
    assert settings.broker.kind == "local" and settings.broker.alpaca_base_url == ALPACA_PAPER_URL


def test_precedence_file_then_environment_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "conf.toml"
    config.write_text('data_dir = "from-file"\nseed = 1\nbase_model = "file-model"\n[broker]\nkind = "alpaca"\n')
    settings = load_settings(config)
    assert (settings.data_dir, settings.seed, settings.broker.kind) == (Path("from-file"), 1, "alpaca")

    monkeypatch.setenv("ADVISOR_SEED", "2")
    monkeypatch.setenv("ADVISOR_BROKER__MAX_ORDER_NOTIONAL", "1234")
    settings = load_settings(config)
    assert settings.seed == 2 and settings.data_dir == Path("from-file")
    assert settings.broker.max_order_notional == 1234

    settings = load_settings(config, seed=3, data_dir=None)
    assert settings.seed == 3
    assert settings.data_dir == Path("from-file"), "an unset flag must not hide lower layers"
    assert settings.base_model == "file-model"


def test_config_file_from_environment_and_default_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Path("advisor.toml").write_text("seed = 7\n")
    assert load_settings().seed == 7
    other = tmp_path / "other.toml"
    other.write_text("seed = 8\n")
    monkeypatch.setenv("ADVISOR_CONFIG", str(other))
    assert load_settings().seed == 8
    monkeypatch.setenv("ADVISOR_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


def test_broker_keys_in_a_config_file_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "conf.toml"
    config.write_text('[broker]\nkind = "alpaca"\napi_key = "AKXXXX"\n')
    with pytest.raises(ConfigError, match="must come from the environment only") as info:
        load_settings(config)
    assert "AKXXXX" not in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        'APCA_API_SECRET_KEY = "SK-LEAK-1"\n',
        '[alpaca]\nkey_id = "AK-LEAK-1"\nsecret_access = "SK-LEAK-1"\n',
        '[broker]\nalpaca_key_id = "AK-LEAK-1"\n',
        '[broker]\nkind = "alpaca"\npassword = "SK-LEAK-1"\n',
    ],
)
def test_any_key_that_looks_like_a_credential_is_refused_and_never_echoed(tmp_path: Path, text: str) -> None:
    config = tmp_path / "conf.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match="must come from the environment only") as info:
        load_settings(config)
    assert "LEAK" not in str(info.value)


def test_a_validation_error_names_the_field_but_not_the_value(tmp_path: Path) -> None:
    config = tmp_path / "conf.toml"
    config.write_text('[broker]\nkind = "AK-PASTED-HERE-BY-MISTAKE"\n')
    with pytest.raises(ConfigError, match="broker.kind") as info:
        load_settings(config)
    assert "PASTED" not in str(info.value)


def test_invalid_values_name_the_file(tmp_path: Path) -> None:
    config = tmp_path / "conf.toml"
    config.write_text("yfinance_retries = 0\n")
    with pytest.raises(ConfigError, match="conf.toml"):
        load_settings(config)
    config.write_text("not toml = = =\n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(config)
    config.write_text("unknown_setting = 1\n")
    with pytest.raises(ConfigError, match="unknown_setting"):
        load_settings(config)


def test_alpaca_keys_come_from_the_environment_and_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="ADVISOR_ALPACA_API_KEY"):
        alpaca_credentials()
    monkeypatch.setenv("ADVISOR_ALPACA_API_KEY", "AK-SECRET-1")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "SK-SECRET-2")
    credentials = alpaca_credentials()
    assert credentials.api_key.get_secret_value() == "AK-SECRET-1"
    assert credentials.secret_key.get_secret_value() == "SK-SECRET-2"
    shown = repr(credentials) + str(credentials) + credentials.model_dump_json()
    assert "AK-SECRET-1" not in shown and "SK-SECRET-2" not in shown
    assert "SECRET" not in load_settings().model_dump_json()
