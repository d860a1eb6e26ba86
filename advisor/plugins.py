"""Packages that build on ``advisor`` (backtest, rlhf) plug into its CLI and demo through entry points.

This keeps imports pointing one way (backtest -> advisor, rlhf -> advisor): ``advisor`` never imports
them, it discovers them. A plugin module (entry point group ``advisor.plugins`` in pyproject.toml)
may define ``register_cli(app)`` to add Typer commands and ``demo_step(context)`` with an integer
``DEMO_ORDER`` to add a step to ``advisor demo``.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from types import ModuleType

GROUP = "advisor.plugins"


def plugins() -> list[ModuleType]:
    loaded = [ep.load() for ep in sorted(entry_points(group=GROUP), key=lambda ep: ep.name)]
    return sorted(loaded, key=lambda module: getattr(module, "DEMO_ORDER", 1000))
