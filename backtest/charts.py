"""PNG charts of stored runs (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from backtest.metrics import drawdown  # noqa: E402


def equity_chart(curves: dict[str, pd.Series], main: str, benchmark: str, path: Path, title: str) -> Path:
    """Equity (normalised to 1) of every curve, and the drawdown of the main run and the benchmark."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.4]})
    for name, series in curves.items():
        normalised = series / series.iloc[0]
        style = {"linewidth": 2.2} if name == main else {"linewidth": 1.6, "color": "black"} if name == benchmark else {"linewidth": 1.0, "linestyle": "--", "alpha": 0.8}
        top.plot(pd.to_datetime(normalised.index), normalised.values, label=name, **style)
    top.set_ylabel("equity (start = 1)")
    top.set_title(title)
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=8)
    for name in (main, benchmark):
        if name in curves:
            dd = drawdown(curves[name])
            bottom.fill_between(pd.to_datetime(dd.index), dd.values * 100, 0, alpha=0.35, label=name)
    bottom.set_ylabel("drawdown %")
    bottom.grid(alpha=0.3)
    bottom.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
