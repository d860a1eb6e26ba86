"""Preferences from three sources, all stored with user, profile version and model version.

* **Human**: a pairwise choice between two candidate views of the same prompt (or "both bad", with an
  optional comment), and thumbs up/down on a single view.
* **Outcome-grounded**: once the forecast week is over, each candidate view is scored by the utility
  the user would have had following it (:mod:`rlhf.utility`: the position the portfolio code takes
  under the user's profile, its P&L day by day with losses weighted by the user's loss aversion,
  less a mean-variance risk charge). Candidate pairs whose utility gap exceeds ``margin`` become
  chosen/rejected. Unparsed candidates are left out (the outcome says nothing about them).
* **Simulated user** (tests and demo; stored with source ``simulated``): picks between two views the
  way a person with the stated profile tends to — a cautious investor prefers modest predictions that
  name concerns, a bold one prefers large moves — with logistic noise, seeded.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from advisor.data.store import MarketStore
from advisor.errors import AdvisorError, DataUnavailableError
from advisor.forecaster.views import parse_view
from db.models import Forecast, Preference, RiskProfile, User
from db.queries import forecasts_visible_to
from db.types import utcnow
from rlhf.profiles import user_utility
from rlhf.utility import DEFAULT_MARGIN, outcome_week, view_utility


class FeedbackError(AdvisorError):
    """Feedback that cannot be recorded (missing forecast, another user's forecast, identical views...)."""


def _forecast(session: Session, forecast_id: int, user: User) -> Forecast:
    row = session.get(Forecast, forecast_id)
    if row is None:
        raise FeedbackError(f"forecast {forecast_id} does not exist")
    if row.user_id is not None and row.user_id != user.id:
        raise FeedbackError(f"forecast {forecast_id} belongs to another user")
    return row


def record_choice(
    session: Session, user: User, profile: RiskProfile, forecast_a: int, forecast_b: int, choice: str,
    comment: str | None = None, *, source: str = "human",
) -> Preference:
    """A pairwise choice: ``choice`` is ``a``, ``b`` or ``both_bad``."""
    if choice not in ("a", "b", "both_bad"):
        raise FeedbackError(f"choice must be 'a', 'b' or 'both_bad', got {choice!r}")
    if forecast_a == forecast_b:
        raise FeedbackError("a pair needs two different views")
    a, b = _forecast(session, forecast_a, user), _forecast(session, forecast_b, user)
    if a.prompt_hash != b.prompt_hash:
        raise FeedbackError(f"forecasts {forecast_a} and {forecast_b} answer different prompts; compare candidates of one prompt")
    if a.raw_text.strip() == b.raw_text.strip():
        raise FeedbackError(f"forecasts {forecast_a} and {forecast_b} are identical views; there is nothing to prefer")
    chosen, rejected = (a, b) if choice in ("a", "both_bad") else (b, a)
    preference = session.scalar(
        select(Preference).where(
            Preference.user_id == user.id, Preference.kind == "pair", Preference.source == source,
            ((Preference.chosen_forecast_id == a.id) & (Preference.rejected_forecast_id == b.id))
            | ((Preference.chosen_forecast_id == b.id) & (Preference.rejected_forecast_id == a.id)),
        ).order_by(Preference.id)
    )
    if preference is None:  # a changed answer on the same two views replaces the earlier one
        preference = Preference(user_id=user.id, kind="pair", source=source)
        session.add(preference)
    preference.profile_id, preference.model_version_id = profile.id, a.model_version_id
    preference.chosen_forecast_id, preference.rejected_forecast_id = chosen.id, rejected.id
    preference.both_bad, preference.comment, preference.created_at = choice == "both_bad", comment, utcnow()
    session.flush()
    return preference


def record_rating(session: Session, user: User, profile: RiskProfile, forecast_id: int, rating: int, comment: str | None = None) -> Preference:
    """Thumbs up (+1) or down (-1) on one view; rating the same view again replaces the earlier thumbs."""
    if rating not in (1, -1):
        raise FeedbackError(f"a rating is +1 (thumbs up) or -1 (thumbs down), got {rating!r}")
    row = _forecast(session, forecast_id, user)
    preference = session.scalar(
        select(Preference).where(Preference.user_id == user.id, Preference.kind == "rating", Preference.forecast_id == row.id).order_by(Preference.id)
    )
    if preference is None:
        preference = Preference(user_id=user.id, kind="rating", source="human", forecast_id=row.id)
        session.add(preference)
    preference.profile_id, preference.model_version_id = profile.id, row.model_version_id
    preference.rating, preference.comment, preference.created_at = rating, comment, utcnow()
    session.flush()
    return preference


def user_ratings(session: Session, user: User, forecast_ids: Sequence[int]) -> dict[int, int]:
    """The user's stored thumbs (+1 / -1) on these views, by forecast id (one per view: a new one replaces)."""
    rows = session.execute(
        select(Preference.forecast_id, Preference.rating).where(
            Preference.user_id == user.id, Preference.kind == "rating", Preference.forecast_id.in_(list(forecast_ids))
        ).order_by(Preference.id)
    ).all()
    return {int(fid): int(rating) for fid, rating in rows if fid is not None and rating is not None}


def candidate_groups(forecasts: Sequence[Forecast]) -> list[list[Forecast]]:
    groups: dict[str, list[Forecast]] = {}
    for row in forecasts:
        groups.setdefault(row.group_key, []).append(row)
    return [sorted(g, key=lambda r: r.candidate_index) for g in groups.values() if len(g) > 1]


def label_outcomes(
    session: Session, store: MarketStore, user: User, profile: RiskProfile, groups: Sequence[Sequence[Forecast]],
    *, margin: float = DEFAULT_MARGIN,
) -> list[Preference]:
    """Outcome-grounded pairs for candidate groups whose target week is over (idempotent)."""
    utility = user_utility(profile)
    existing: set[tuple[int | None, int | None]] = set(
        session.execute(
            select(Preference.chosen_forecast_id, Preference.rejected_forecast_id).where(
                Preference.user_id == user.id, Preference.profile_id == profile.id, Preference.source == "outcome"
            )
        ).all()
    )
    created: list[Preference] = []
    for group in groups:
        first = group[0]
        try:
            week = outcome_week(store, first.ticker, first.forecast_date)
        except DataUnavailableError:
            continue  # the week is not over yet (or has no data): no outcome to learn from
        scored = []
        for row in group:
            view = parse_view(row.raw_text)
            if view.is_signal:
                scored.append((row, view_utility(view.expected_return_pct, week, utility)))
        for i in range(len(scored)):
            for j in range(i + 1, len(scored)):
                (ra, ua), (rb, ub) = scored[i], scored[j]
                if abs(ua.utility - ub.utility) <= margin or ra.raw_text.strip() == rb.raw_text.strip():
                    continue
                (chosen, uc), (rejected, ur) = ((ra, ua), (rb, ub)) if ua.utility > ub.utility else ((rb, ub), (ra, ua))
                if (chosen.id, rejected.id) in existing:
                    continue
                preference = Preference(
                    user_id=user.id, profile_id=profile.id, model_version_id=chosen.model_version_id, kind="pair",
                    source="outcome", chosen_forecast_id=chosen.id, rejected_forecast_id=rejected.id,
                    utility_chosen=uc.utility, utility_rejected=ur.utility,
                )
                session.add(preference)
                existing.add((chosen.id, rejected.id))
                created.append(preference)
    session.flush()
    return created


def simulated_score(raw_text: str, profile: RiskProfile) -> float | None:
    """How much a simulated person with ``profile`` likes a view (None: unparsed, always disliked)."""
    view = parse_view(raw_text)
    if not view.is_signal:
        return None
    s = profile.score if profile.score is not None else 0.5
    preferred_magnitude = 0.5 + 5.0 * s  # cautious people like "0-1%", bold ones "more than 5%"
    magnitude = abs(view.expected_return_pct or 0.0)
    caution = len(view.concerns) - len(view.positives)
    return -abs(magnitude - preferred_magnitude) + 0.5 * caution * (1.0 - 2.0 * s)


def simulated_choice(text_a: str, text_b: str, profile: RiskProfile, rng: random.Random, temperature: float = 0.5) -> str:
    """'a', 'b' or 'both_bad', like a person with ``profile`` (logistic noise with ``temperature``)."""
    sa, sb = simulated_score(text_a, profile), simulated_score(text_b, profile)
    if sa is None and sb is None:
        return "both_bad"
    if sa is None or sb is None:
        return "b" if sa is None else "a"
    p_a = 1.0 / (1.0 + math.exp(-(sa - sb) / temperature))
    return "a" if rng.random() < p_a else "b"


def simulate_feedback(
    session: Session, user: User, profile: RiskProfile, groups: Sequence[Sequence[Forecast]], *, seed: int = 0
) -> list[Preference]:
    """A simulated user's A/B choices on the first two distinct candidates of each group (source 'simulated')."""
    rng = random.Random(seed)
    created = []
    for group in groups:
        distinct: list[Forecast] = []
        for row in group:
            if all(row.raw_text.strip() != other.raw_text.strip() for other in distinct):
                distinct.append(row)
        if len(distinct) < 2:
            continue
        a, b = distinct[0], distinct[1]
        choice = simulated_choice(a.raw_text, b.raw_text, profile, rng)
        created.append(record_choice(session, user, profile, a.id, b.id, choice, "simulated user", source="simulated"))
    return created


def feedback_counts(session: Session, user: User) -> dict[str, int]:
    rows = session.execute(select(Preference.source, Preference.kind).where(Preference.user_id == user.id)).all()
    counts: dict[str, int] = {}
    for source, kind in rows:
        counts[f"{source}_{kind}"] = counts.get(f"{source}_{kind}", 0) + 1
    return counts


def pending_pairs(session: Session, user: User, limit: int = 5) -> list[tuple[Forecast, Forecast]]:
    """Pairs of distinct candidate views (one prompt) the user can see and has not judged yet."""
    judged = set()
    for chosen, rejected in session.execute(
        select(Preference.chosen_forecast_id, Preference.rejected_forecast_id).where(Preference.user_id == user.id, Preference.kind == "pair")
    ).all():
        judged.update({chosen, rejected})
    rows = session.scalars(
        select(Forecast).where(forecasts_visible_to(user.id), Forecast.decoding["mode"].as_string() == "sample").order_by(Forecast.forecast_date.desc(), Forecast.id)
    ).all()
    pairs: list[tuple[Forecast, Forecast]] = []
    for group in candidate_groups(rows):
        distinct = [r for r in group if r.id not in judged]
        distinct = [r for i, r in enumerate(distinct) if all(r.raw_text.strip() != o.raw_text.strip() for o in distinct[:i])]
        if len(distinct) >= 2:
            pairs.append((distinct[0], distinct[1]))
        if len(pairs) >= limit:
            break
    return pairs
