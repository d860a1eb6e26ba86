"""First-party imports sit at the top of a file, except the heavy or optional ones named here with why.

An import inside a function hides a module's dependencies from its reader and from the type checker;
it is worth that only when importing the module up front would cost a command seconds it may not need
(torch and TRL take ~7 s) or would import something optional or circular.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("advisor", "db", "rlhf", "backtest", "dashboard")

TORCH = "imports torch, transformers and TRL (~7 s)"
LAZY_OK = {
    "advisor.forecaster.evaluation": TORCH,
    "advisor.forecaster.sft": TORCH,
    "advisor.forecaster.training": TORCH,
    "rlhf.compare": TORCH,
    "rlhf.loop": TORCH,
    "rlhf.shared_prompt": TORCH,
    "backtest.engine": "imports Backtrader",
    "backtest.runner": "imports Backtrader",
    "advisor.data.yahoo": "only for live data (network)",
    "advisor.trading.alpaca_broker": "only for the Alpaca paper broker",
    "advisor.forecaster.backends.fast": "a backend, chosen at run time; it imports its package (circular at the top)",
    "advisor.forecaster.backends.hf": "a backend, chosen at run time; it imports its package (circular at the top)",
    "advisor.forecaster.backends.server": "a backend, chosen at run time; it imports its package (circular at the top)",
    "advisor.forecaster.shipped": "it imports advisor.forecaster.versions (circular at the top)",
}


def _function_level_imports() -> list[tuple[str, int, str]]:
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue  # Alembic's env.py is a script Alembic runs, not a module
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and inner.level == 0 and inner.module:
                        modules = [inner.module]
                    elif isinstance(inner, ast.Import):
                        modules = [alias.name for alias in inner.names]
                    else:
                        continue
                    for module in modules:
                        if module.split(".")[0] in PACKAGES:
                            found.append((str(path.relative_to(REPO)), inner.lineno, module))
    return found


def test_first_party_imports_are_at_the_top_unless_heavy_or_optional() -> None:
    misplaced = [f"{path}:{line} imports {module} inside a function" for path, line, module in _function_level_imports() if module not in LAZY_OK]
    assert not misplaced, "\n".join(misplaced)
