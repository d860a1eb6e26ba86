"""Robo-advisor core: market data, forecaster, portfolio construction, trading and the CLI."""

__version__ = "0.1.0"
