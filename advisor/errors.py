"""The product's error hierarchy.

Every error a user can cause or fix derives from :class:`AdvisorError`; the CLI prints its message and
exits with status 2 instead of showing a traceback. Messages name what was wrong (file, row, field,
ticker, date) so the user can act on them.
"""

from __future__ import annotations

from pathlib import Path


class AdvisorError(Exception):
    """A problem with input, configuration or data that the user can fix."""


class ConfigError(AdvisorError):
    """Invalid configuration (file, environment or flags)."""


class InputValidationError(AdvisorError):
    """Input that failed validation; nothing was written.

    Carries the location so tests and callers can check it precisely.
    """

    def __init__(
        self,
        message: str,
        *,
        file: Path | str | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.row = row
        self.field = field
        where = []
        if self.file is not None:
            where.append(self.file)
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class UnknownTickerError(AdvisorError):
    """A ticker the store does not know."""

    def __init__(self, ticker: str, hint: str = "") -> None:
        self.ticker = ticker
        super().__init__(f"unknown ticker '{ticker}'" + (f": {hint}" if hint else ""))


class DataUnavailableError(AdvisorError):
    """The store does not hold the data a request needs (dates outside the data, empty windows)."""


class FutureDateError(DataUnavailableError):
    """A date that lies in the future (nothing can be known about it yet)."""


class ProviderError(AdvisorError):
    """A market-data provider failed (network, timeout, empty answer)."""


class ProviderTimeoutError(ProviderError):
    """A provider call did not answer within its timeout after all retries."""


class EmptyProviderResultError(ProviderError):
    """A provider answered with no rows for a ticker and period."""
