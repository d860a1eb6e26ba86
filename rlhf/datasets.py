"""Exporting stored preferences to TRL dataset formats, split by time (never at random).

* pairs -> conversational ``{"prompt": [messages], "chosen": [assistant], "rejected": [assistant]}``
  for DPO and the reward model ("both bad" pairs are not preferences between the two);
* ratings, and both views of a "both bad" pair as thumbs-down ->
  ``{"prompt": [messages], "completion": [assistant], "label": bool}`` for KTO.

The split puts every example whose forecast week is on or after ``split_date`` into evaluation, so
evaluation weeks always come after training weeks; by default the split date is chosen so that about
``eval_fraction`` of the distinct weeks are held out.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from db.models import Forecast, Preference, User

SOURCE_PRIORITY = {"human": 0, "simulated": 1, "outcome": 2}


@dataclass(frozen=True)
class Example:
    forecast_date: date
    row: dict[str, Any]
    source: str


@dataclass(frozen=True)
class Split:
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    split_date: date | None

    def snapshot(self) -> dict[str, Any]:
        digest = hashlib.sha256(json.dumps({"train": self.train, "eval": self.eval}, sort_keys=True, default=str).encode()).hexdigest()
        return {"train": len(self.train), "eval": len(self.eval), "split_date": str(self.split_date) if self.split_date else None, "sha256": digest}


def prompt_of(row: Forecast) -> list[dict[str, str]] | str:
    """Conversational messages when stored; the rendered text for rows made before they were stored."""
    return [dict(m) for m in row.prompt_messages] if row.prompt_messages else row.prompt_text


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def pair_examples(session: Session, user: User, sources: tuple[str, ...] = ("human", "outcome", "simulated")) -> list[Example]:
    chosen, rejected = aliased(Forecast), aliased(Forecast)
    rows = session.execute(
        select(Preference, chosen, rejected)
        .join(chosen, Preference.chosen_forecast_id == chosen.id)
        .join(rejected, Preference.rejected_forecast_id == rejected.id)
        .where(Preference.user_id == user.id, Preference.kind == "pair", Preference.both_bad.is_(False), Preference.source.in_(sources))
        .order_by(Preference.id)
    ).all()
    out = []
    seen: set[frozenset[int]] = set()
    # One example per pair of views: a person's own choice first, then the simulated user's, then the
    # outcome label; within a source the latest answer (feedback replaces itself; older databases may
    # hold repeats).
    rows = sorted(rows, key=lambda t: (SOURCE_PRIORITY.get(t[0].source, 9), -t[0].id))
    for preference, c, r in rows:
        if frozenset((c.id, r.id)) in seen:
            continue
        seen.add(frozenset((c.id, r.id)))
        prompt = prompt_of(c)
        out.append(Example(c.forecast_date, {"prompt": prompt, "chosen": _assistant(c.raw_text), "rejected": _assistant(r.raw_text)}, preference.source))
    return out


def rating_examples(session: Session, user: User) -> list[Example]:
    out = []
    ratings = session.execute(
        select(Preference, Forecast).join(Forecast, Preference.forecast_id == Forecast.id)
        .where(Preference.user_id == user.id, Preference.kind == "rating").order_by(Preference.id)
    ).all()
    rated: set[int] = set()
    for preference, row in sorted(ratings, key=lambda t: -t[0].id):  # the latest thumbs on a view is the answer
        if row.id in rated:
            continue
        rated.add(row.id)
        out.append(Example(row.forecast_date, {"prompt": prompt_of(row), "completion": _assistant(row.raw_text), "label": (preference.rating or 0) > 0}, "human"))
    both_bad = session.scalars(select(Preference).where(Preference.user_id == user.id, Preference.kind == "pair", Preference.both_bad.is_(True)))
    for preference in both_bad:
        for forecast_id in (preference.chosen_forecast_id, preference.rejected_forecast_id):
            bad = session.get(Forecast, forecast_id) if forecast_id is not None else None
            if bad is not None:
                out.append(Example(bad.forecast_date, {"prompt": prompt_of(bad), "completion": _assistant(bad.raw_text), "label": False}, preference.source))
    return out


def time_split(examples: list[Example], *, split_date: date | None = None, eval_fraction: float = 0.25) -> Split:
    """Everything on or after ``split_date`` is evaluation; the default holds out the last weeks."""
    if not examples:
        return Split([], [], split_date)
    if split_date is None:
        weeks = sorted({e.forecast_date for e in examples})
        held = max(1, round(len(weeks) * eval_fraction)) if len(weeks) > 1 else 0
        split_date = weeks[-held] if held else None
    if split_date is None:
        return Split([e.row for e in examples], [], None)
    train = [e.row for e in examples if e.forecast_date < split_date]
    evaluation = [e.row for e in examples if e.forecast_date >= split_date]
    return Split(train, evaluation, split_date)
