"""Numbers a person reads: money and changes formatted, charts not pinned at zero, whole legend labels."""

from __future__ import annotations

import pandas as pd

from dashboard.formatting import line_chart, money, signed_pct


def test_money_and_changes_are_formatted() -> None:
    assert money(102345.678) == "$102,345.68"
    assert money(None) == "—"
    assert signed_pct(1.234) == "+1.23%" and signed_pct(-0.5, 1) == "-0.5%" and signed_pct(float("nan")) == "—"


def test_equity_lines_fit_their_range_and_keep_whole_labels() -> None:
    frame = pd.DataFrame({"following the views of model version 12": [1.0, 1.02, 0.99], "benchmark (equal-weight buy and hold)": [1.0, 1.01, 1.03]},
                         index=pd.to_datetime(["2015-04-01", "2015-04-02", "2015-04-03"]))
    spec = line_chart(frame, y_title="Value of $1 invested", y_format="$.2f").to_dict()
    y, color = spec["encoding"]["y"], spec["encoding"]["color"]
    assert y["scale"]["zero"] is False and y["axis"]["format"] == "$.2f"
    assert color["legend"]["labelLimit"] == 0 and color["scale"]["scheme"] == "tableau10"
    values = spec["datasets"][spec["data"]["name"]]
    assert {v["series"] for v in values} == set(frame.columns) and len(values) == 6
    drawdown = line_chart(frame - 1, y_title="Below the running peak", y_format=".1%", area=True).to_dict()
    assert drawdown["encoding"]["y"]["scale"]["zero"] is True  # an area is measured from zero
