"""Risk profiles: a robo-advisor questionnaire scored into the limits the portfolio code uses.

Eight questions, each answered by choosing one option (index 0..3, from most cautious to most
risk-seeking). The score s = (sum of option indices) / 24 lies in [0, 1] and sets, continuously:

    risk aversion    lambda = 40 * (4/40)^s            (40 at s=0 ... 4 at s=1; log-linear)
    max weight       0.05 + 0.30 s                     (5% ... 35% of equity per name)
    max gross        0.40 + 1.10 s                     (40% ... 150% of equity)
    target vol       0.05 + 0.25 s                     (5% ... 30% a year)
    cash buffer      0.25 (1 - s)                      (25% ... 0% kept in cash)
    shorts allowed   s >= 0.7 and experience >= "stocks"
    label            conservative (s < 0.35), moderate (s < 0.7), aggressive

Loss aversion kappa (how much more a day's loss hurts than a gain of the same size; it is what makes
outcome-grounded preferences differ between users, see :mod:`rlhf.utility`) comes from the two
questions about losses, t = drop_reaction + loss_tolerance (0..6)::

    kappa = 3 - t / 3      t: 0    1     2     3    4     5     6
                           k: 3.0  2.67  2.33  2.0  1.67  1.33  1.0

(Kahneman & Tversky's median estimate, 2.25, lies in the middle; "Buy more" and "30% or more" give 1,
no loss aversion.)

Profiles are versioned per user: answering again creates version n+1 (unless nothing changed);
everything downstream (preferences, forecasts, training runs, backtests) records the version it used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from advisor.errors import InputValidationError
from advisor.portfolio import RiskParams, params_from_profile
from advisor.users import require_profile as require_profile  # re-exported for the rlhf modules
from advisor.users import require_user
from db.models import RiskProfile, User
from db.queries import find_user, latest_profile
from rlhf.utility import UserUtility


@dataclass(frozen=True)
class Question:
    key: str
    text: str
    options: tuple[str, ...]


QUESTIONS: tuple[Question, ...] = (
    Question("horizon", "When will you need most of this money?", ("Within a year", "In 1-3 years", "In 3-7 years", "In more than 7 years")),
    Question("goal", "What is the main goal of this account?", ("Keep what I have", "Steady income", "Balanced growth", "Maximum growth")),
    Question("income_stability", "How stable is your income?", ("Unstable or none", "Somewhat stable", "Stable", "Very stable, with savings beyond this account")),
    Question("experience", "How much investing experience do you have?", ("None", "Funds only", "Individual stocks", "Active trading, options or shorting")),
    Question("drop_reaction", "Your portfolio falls 20% in a month. What do you do?", ("Sell everything", "Sell some", "Hold and wait", "Buy more")),
    Question("loss_tolerance", "The largest one-year loss you could accept?", ("5%", "10%", "20%", "30% or more")),
    Question("liquidity", "Might you need to withdraw a large part at short notice?", ("Very likely", "Possibly", "Unlikely", "No")),
    Question("age", "Your age?", ("65 or over", "50-64", "35-49", "Under 35")),
)
QUESTION_KEYS = tuple(q.key for q in QUESTIONS)
MAX_SCORE = 3 * len(QUESTIONS)


def loss_aversion_for(answers: dict[str, int]) -> float:
    """kappa from the answers about losses (table in the module docstring)."""
    return round(3.0 - (answers["drop_reaction"] + answers["loss_tolerance"]) / 3.0, 4)


@dataclass(frozen=True)
class ScoredProfile:
    answers: dict[str, int]
    score: float
    label: str
    params: RiskParams

    @property
    def loss_aversion(self) -> float:
        return loss_aversion_for(self.answers)

    @property
    def utility(self) -> UserUtility:
        return UserUtility(self.params, self.loss_aversion)

    def describe(self) -> str:
        p = self.params
        return (
            f"{self.label}: risk aversion {p.risk_aversion:.1f}, max {p.max_weight:.0%} per name, max gross {p.max_gross:.0%}, "
            f"target volatility {p.target_vol:.0%}, cash buffer {p.cash_buffer:.0%}, shorts {'allowed' if p.allow_shorts else 'not allowed'}, "
            f"loss aversion {self.loss_aversion:.2f}"
        )


def validate_answers(answers: dict[str, Any]) -> dict[str, int]:
    """Every question answered with an option index 0..3; nothing else."""
    missing = [k for k in QUESTION_KEYS if k not in answers]
    if missing:
        raise InputValidationError(f"questionnaire incomplete: missing {', '.join(missing)}", field=missing[0])
    unknown = [k for k in answers if k not in QUESTION_KEYS]
    if unknown:
        raise InputValidationError(f"unknown question(s) {', '.join(unknown)}; expected {', '.join(QUESTION_KEYS)}", field=unknown[0])
    clean = {}
    for question in QUESTIONS:
        value = answers[question.key]
        try:
            index = int(value)
        except (TypeError, ValueError):
            raise InputValidationError(f"answer to '{question.key}' must be an option number 0-3, got {value!r}", field=question.key) from None
        if isinstance(value, float) and not value.is_integer() or not 0 <= index < len(question.options):
            raise InputValidationError(
                f"answer to '{question.key}' is out of range: {value!r} (options 0-{len(question.options) - 1}: "
                f"{'; '.join(f'{i}={o}' for i, o in enumerate(question.options))})",
                field=question.key,
            )
        clean[question.key] = index
    return clean


def score_answers(answers: dict[str, Any]) -> ScoredProfile:
    clean = validate_answers(answers)
    s = sum(clean.values()) / MAX_SCORE
    label = "conservative" if s < 0.35 else "moderate" if s < 0.7 else "aggressive"
    params = RiskParams(
        risk_aversion=round(40.0 * math.exp(s * math.log(4.0 / 40.0)), 4),
        max_weight=round(0.05 + 0.30 * s, 4),
        max_gross=round(0.40 + 1.10 * s, 4),
        allow_shorts=s >= 0.7 and clean["experience"] >= 2,
        target_vol=round(0.05 + 0.25 * s, 4),
        cash_buffer=round(0.25 * (1 - s), 4),
    )
    return ScoredProfile(clean, s, label, params)


ARCHETYPES: dict[str, dict[str, int]] = {
    "conservative": {k: 0 for k in QUESTION_KEYS} | {"income_stability": 1, "experience": 1},
    "moderate": {k: 1 for k in QUESTION_KEYS} | {"horizon": 2, "goal": 2},
    "aggressive": {k: 3 for k in QUESTION_KEYS},
}


MAX_USER_NAME = 100  # users.name is VARCHAR(100)


def get_user(session: Session, name: str) -> User:
    return require_user(session, name)


def ensure_user(session: Session, name: str, *, simulated: bool = False) -> User:
    name = name.strip()
    if not name:
        raise InputValidationError("user name must not be empty", field="user")
    if len(name) > MAX_USER_NAME:
        raise InputValidationError(f"user name is {len(name)} characters long; at most {MAX_USER_NAME}", field="user")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise InputValidationError("user name must not contain control characters (tabs, newlines, NUL)", field="user")
    user = find_user(session, name)
    if user is None:
        user = User(name=name, is_simulated=simulated)
        session.add(user)
        session.flush()
    return user


def current_profile(session: Session, user: User) -> RiskProfile | None:
    return latest_profile(session, user.id)


def profile_history(session: Session, user: User) -> list[RiskProfile]:
    return list(session.scalars(select(RiskProfile).where(RiskProfile.user_id == user.id).order_by(RiskProfile.version)))


def save_profile(session: Session, user_name: str, answers: dict[str, Any], *, simulated: bool = False) -> tuple[RiskProfile, bool]:
    """Score the answers and store them as the user's next profile version; (profile, created)."""
    scored = score_answers(answers)
    user = ensure_user(session, user_name, simulated=simulated)
    latest = current_profile(session, user)
    if latest is not None and latest.answers == scored.answers:
        return latest, False
    p = scored.params
    profile = RiskProfile(
        user_id=user.id, version=(latest.version + 1) if latest else 1, label=scored.label, answers=scored.answers,
        score=scored.score, risk_aversion=p.risk_aversion, max_weight=p.max_weight, max_gross=p.max_gross,
        allow_shorts=p.allow_shorts, target_vol=p.target_vol, cash_buffer=p.cash_buffer,
    )
    session.add(profile)
    session.flush()
    return profile, True


def risk_params(profile: RiskProfile) -> RiskParams:
    return params_from_profile(profile)


def user_utility(profile: RiskProfile) -> UserUtility:
    """The stored profile's utility parameters (loss aversion from its stored answers)."""
    return UserUtility(params_from_profile(profile), loss_aversion_for(validate_answers(profile.answers)))


def risk_context(profile: RiskProfile) -> str:
    """A one-line description of the profile (for prompts and pages)."""
    shorts = "shorts allowed" if profile.allow_shorts else "long only"
    return (
        f"{profile.label} investor (risk aversion {profile.risk_aversion:.1f}, at most {profile.max_weight:.0%} per name, "
        f"{shorts}, target volatility {profile.target_vol or 0:.0%})"
    )
