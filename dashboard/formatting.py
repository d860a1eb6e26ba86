"""How numbers look on the pages: money, percentages, human column names and charts a person can read.

One place, so every page formats a return, a price or an equity curve the same way: currency with
thousands separators, percentages with a sign where they are changes, charts whose value axis is not
pinned at zero (an equity line between 98k and 103k drawn from 0 is a flat line) and legends that
show whole labels in distinct colours.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import altair as alt
import pandas as pd
import streamlit as st

PALETTE: Final = "tableau10"  # ten distinct colours


def money(value: float | None) -> str:
    return "—" if value is None or pd.isna(value) else f"${value:,.2f}"


def signed_pct(value: float | None, digits: int = 2) -> str:
    """A change in percent points, e.g. ``+1.25%`` (``value`` already in percent)."""
    return "—" if value is None or pd.isna(value) else f"{value:+.{digits}f}%"


def line_chart(frame: pd.DataFrame, *, y_title: str, y_format: str, x_title: str | None = None, area: bool = False) -> alt.Chart:
    """Lines (or areas) of ``frame``'s columns over its index, one colour each, axis fitted to the data."""
    long = frame.rename_axis("date").reset_index().melt("date", var_name="series", value_name="value").dropna()
    mark = alt.Chart(long).mark_area(opacity=0.35, line=True) if area else alt.Chart(long).mark_line()
    return mark.encode(
        x=alt.X("date:T", title=x_title),
        y=alt.Y("value:Q", title=y_title, axis=alt.Axis(format=y_format), scale=alt.Scale(zero=area)),
        color=alt.Color("series:N", title=None, scale=alt.Scale(scheme=PALETTE), legend=alt.Legend(orient="bottom", labelLimit=0)),
        tooltip=[alt.Tooltip("date:T"), alt.Tooltip("series:N"), alt.Tooltip("value:Q", format=y_format)],
    )


def show_table(frame: pd.DataFrame, columns: Mapping[str, tuple[str, str | None]], *, hide_index: bool = True) -> None:
    """``frame`` with its columns renamed and formatted: ``{column: (human name, number format or None)}``.

    Columns not named are left out. Formats are Streamlit's (``"dollar"``, ``"percent"``, ``"%.2f"``...).
    """
    kept = [c for c in columns if c in frame.columns]
    shown = frame[kept].rename(columns={c: columns[c][0] for c in kept})
    config = {columns[c][0]: st.column_config.NumberColumn(format=columns[c][1]) for c in kept if columns[c][1] is not None}
    st.dataframe(shown, hide_index=hide_index, column_config=config)
