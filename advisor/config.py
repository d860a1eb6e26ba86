"""One typed settings object for the whole product.

Precedence, lowest to highest: defaults < config file (TOML) < environment (``ADVISOR_...``) < CLI flags
(passed to :func:`load_settings` as keyword overrides).

The config file is, in order: the ``config_file`` argument (CLI ``--config``), ``$ADVISOR_CONFIG``, or
``./advisor.toml`` when it exists. Nested sections use TOML tables (``[broker]``) or, in the
environment, a double underscore (``ADVISOR_BROKER__KIND=alpaca``).

Broker keys are deliberately *not* part of :class:`Settings`: they are read from the environment only
(:func:`alpaca_credentials`), held as ``SecretStr`` so they never print, and a config file that tries
to set them is rejected.
"""

from __future__ import annotations

import os
import re
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from advisor.errors import ConfigError

DEFAULT_CONFIG_NAME = "advisor.toml"
ALPACA_PAPER_URL = "https://paper-api.alpaca.markets"
DEFAULT_BASE_MODEL = "SmolLM2-135M-Instruct"

_config_values: ContextVar[dict[str, Any] | None] = ContextVar("_config_values", default=None)

# A config-file key that looks like a credential (any spelling: APCA_API_SECRET_KEY, key_id, secret_access,
# alpaca_key_id, password, token...) is refused: keys come from the environment only.
_SECRET_KEY_PATTERN = re.compile(r"secret|key_?id|api_?key|passw|token|passphrase|credential|^apca_", re.IGNORECASE)


class BrokerSettings(BaseModel):
    """Which paper broker the bot uses and its safety caps (keys are not here; see module doc)."""

    kind: Literal["local", "alpaca"] = Field("local", description="Paper broker: built-in local or Alpaca paper.")
    alpaca_base_url: str = Field(ALPACA_PAPER_URL, description="Alpaca paper endpoint; live URLs are refused.")
    max_order_notional: float = Field(25_000.0, gt=0, description="Hard cap on one order's notional (USD).")
    max_daily_notional: float = Field(250_000.0, gt=0, description="Hard cap on notional sent per day (USD).")
    initial_cash: float = Field(100_000.0, gt=0, description="Starting cash of a new local paper account.")


class InferenceSettings(BaseModel):
    """Which inference backend writes views (see ``advisor/forecaster/backends``)."""

    backend: Literal["auto", "engine", "transformers", "openai"] = Field(
        "auto",
        description="auto: the fast engine where the model supports it, else transformers; "
        "openai: an OpenAI-compatible server (vLLM, SGLang, llama.cpp server).",
    )
    slots: int = Field(32, ge=1, le=256, description="Sequences the engine decodes together (KV cache ~35 MB each for the default model).")
    server_url: str = Field("http://127.0.0.1:8000/v1", description="Base URL of the OpenAI-compatible server.")
    server_model: str | None = Field(None, description="Served name of the base model (default: the base model's name).")
    server_adapter_prefix: str = Field("advisor-", description="Served LoRA names are this prefix + 16 hex of the adapter hash.")
    server_timeout_s: float = Field(120.0, gt=0, description="Read timeout of one completion request.")
    server_retries: int = Field(3, ge=1, le=10, description="Attempts per completion request (connection errors, 5xx, 429).")
    server_concurrency: int = Field(8, ge=1, le=256, description="Completion requests in flight at once.")


class Settings(BaseSettings):
    """Typed configuration. Build it with :func:`load_settings`, not directly."""

    model_config = SettingsConfigDict(
        env_prefix="ADVISOR_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Field(Path("var"), description="Where the database, charts and reports live.")
    database_url: str | None = Field(None, description="Any SQLAlchemy URL; default: SQLite file in data_dir.")
    model_dir: Path | None = Field(None, description="Where models and adapters live; default: data_dir/models.")
    bundle_dir: Path | None = Field(None, description="Offline data bundle (stocknet format) for the demo.")
    base_model: str = Field(DEFAULT_BASE_MODEL, description="Hugging Face causal LM id or local path.")
    seed: int = Field(0, description="Default random seed for generation and training.")
    yfinance_timeout_s: float = Field(10.0, gt=0, description="Per-request timeout for yfinance.")
    yfinance_retries: int = Field(3, ge=1, le=10, description="Attempts per yfinance request.")
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)

    @field_validator("data_dir", "model_dir", "bundle_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'advisor.db').resolve()}"

    @property
    def resolved_model_dir(self) -> Path:
        return self.model_dir if self.model_dir is not None else self.data_dir / "models"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: CLI flags (init) > environment > config file > field defaults.
        return (init_settings, env_settings, _ConfigFileSource(settings_cls))


class _ConfigFileSource(PydanticBaseSettingsSource):
    """Values read from the TOML config file by :func:`load_settings`."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return (_config_values.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_config_values.get() or {})


def resolve_config_path(config_file: Path | str | None) -> Path | None:
    """The config file to read, or None. An explicitly named file must exist."""
    if config_file is not None:
        path = Path(config_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    env_path = os.environ.get("ADVISOR_CONFIG")
    if env_path:
        path = Path(env_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"ADVISOR_CONFIG points to {path}, which does not exist")
        return path
    default = Path(DEFAULT_CONFIG_NAME)
    return default if default.is_file() else None


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from exc
    secrets = _find_secret_keys(values)
    if secrets:
        raise ConfigError(
            f"{path}: broker keys ({', '.join(sorted(secrets))}) must come from the environment only "
            "(ADVISOR_ALPACA_API_KEY / ADVISOR_ALPACA_SECRET_KEY); remove them from the file"
        )
    return values


def _find_secret_keys(values: dict[str, Any], prefix: str = "") -> set[str]:
    found: set[str] = set()
    for key, value in values.items():
        name = f"{prefix}{key}"
        if _SECRET_KEY_PATTERN.search(str(key)):
            found.add(name)
        if isinstance(value, dict):
            found |= _find_secret_keys(value, prefix=f"{name}.")
    return found


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` with the documented precedence.

    ``overrides`` are CLI flags; ``None`` values are ignored so an unset flag never hides the
    environment or the file.
    """
    path = resolve_config_path(config_file)
    file_values = _read_config_file(path) if path else {}
    token = _config_values.set(file_values)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        source = f" (config file {path})" if path else ""
        raise ConfigError(f"invalid settings{source}: {describe_validation_error(exc)}") from None
    finally:
        _config_values.reset(token)


def describe_validation_error(exc: ValidationError) -> str:
    """Where and what, never the value given (it may be a key pasted into the wrong place)."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in error.get("loc", ())) or "settings"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(problems)


class AlpacaCredentials(BaseSettings):
    """Alpaca paper keys, from the environment only. ``SecretStr`` keeps them out of reprs and logs."""

    model_config = SettingsConfigDict(extra="ignore")

    api_key: SecretStr = Field(validation_alias=AliasChoices("ADVISOR_ALPACA_API_KEY", "APCA_API_KEY_ID"))
    secret_key: SecretStr = Field(validation_alias=AliasChoices("ADVISOR_ALPACA_SECRET_KEY", "APCA_API_SECRET_KEY"))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings,)


def alpaca_credentials() -> AlpacaCredentials:
    """Read the Alpaca paper keys from the environment, or say which variables are missing."""
    try:
        return AlpacaCredentials()
    except ValidationError as exc:
        raise ConfigError(
            "Alpaca paper keys are missing: set ADVISOR_ALPACA_API_KEY and ADVISOR_ALPACA_SECRET_KEY "
            "(or APCA_API_KEY_ID / APCA_API_SECRET_KEY) in the environment"
        ) from exc
