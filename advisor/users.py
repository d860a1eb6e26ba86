"""A user and their profile in force, looked up by name for the CLI, the demo and the plugins, with the
one message that tells a person what to do when either is missing."""

from __future__ import annotations

from sqlalchemy.orm import Session

from advisor.errors import AdvisorError
from db.models import RiskProfile, User
from db.queries import find_user, latest_profile


class UnknownUserError(AdvisorError):
    """A user name the database does not know."""


def require_user(session: Session, name: str) -> User:
    user = find_user(session, name)
    if user is None:
        raise UnknownUserError(f"no user named '{name}' (create one by answering the questionnaire: advisor profile set --user {name})")
    return user


def require_profile(session: Session, user: User) -> RiskProfile:
    profile = latest_profile(session, user.id)
    if profile is None:
        raise AdvisorError(f"user '{user.name}' has no risk profile yet: answer the questionnaire first (advisor profile set --user {user.name})")
    return profile
