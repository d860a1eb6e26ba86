"""The model registry as users see it: which version serves a user, switching, rolling back.

Versions are ``db.models.ModelVersion`` rows (base, SFT, DPO, KTO, reward), registered by content hash
with their parent and metrics. A user's active version is the newest ``ModelActivation`` row;
switching and rolling back append rows, so the history is never lost. A user with no activation is
served by the newest shared SFT adapter (or the base when there is none).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from advisor.errors import AdvisorError
from advisor.forecaster.loading import ModelHandle, ModelSpec, load_model
from advisor.forecaster.versions import base_key, serving_version
from db.models import ModelActivation, ModelVersion, User
from db.queries import versions_visible_to

SERVABLE_KINDS = ("base", "sft", "dpo", "kto", "adapter")


class RegistryError(AdvisorError):
    """A version that cannot be activated or a rollback with nothing to roll back to."""


def user_versions(session: Session, user: User) -> list[ModelVersion]:
    """Versions a user may use: shared ones (base, SFT) and their own tuned ones, newest first."""
    return list(
        session.scalars(
            select(ModelVersion).where(versions_visible_to(user.id)).order_by(ModelVersion.id.desc())
        )
    )


def activation_history(session: Session, user: User) -> list[ModelActivation]:
    return list(session.scalars(select(ModelActivation).where(ModelActivation.user_id == user.id).order_by(ModelActivation.id)))


def active_version(session: Session, user: User) -> ModelVersion | None:
    latest = session.scalar(select(ModelActivation).where(ModelActivation.user_id == user.id).order_by(ModelActivation.id.desc()))
    return session.get(ModelVersion, latest.model_version_id) if latest else None


def activate(session: Session, user: User, version_id: int, reason: str) -> ModelActivation:
    version = session.get(ModelVersion, version_id)
    if version is None:
        raise RegistryError(f"model version {version_id} does not exist")
    if version.user_id is not None and version.user_id != user.id:
        raise RegistryError(f"model version {version_id} belongs to another user")
    if version.kind not in SERVABLE_KINDS:
        raise RegistryError(f"model version {version_id} is a {version.kind} model and cannot write views")
    if version.adapter_path and not Path(version.adapter_path).is_dir():
        raise RegistryError(f"model version {version_id}'s adapter is missing from {version.adapter_path}")
    row = ModelActivation(user_id=user.id, model_version_id=version.id, reason=reason)
    session.add(row)
    session.flush()
    return row


def rollback(session: Session, user: User) -> ModelVersion:
    """Re-activate the version that was active before the current one."""
    history = activation_history(session, user)
    if not history:
        raise RegistryError(f"user '{user.name}' has never switched versions: nothing to roll back")
    current = history[-1].model_version_id
    previous = next((h.model_version_id for h in reversed(history[:-1]) if h.model_version_id != current), None)
    if previous is None:
        raise RegistryError(f"user '{user.name}' has no earlier version to roll back to")
    activate(session, user, previous, f"rollback from version {current}")
    version = session.get(ModelVersion, previous)
    assert version is not None
    return version


def handle_for(session: Session, user: User | None, base_model: str, model_dir: Path) -> tuple[ModelHandle, ModelVersion | None]:
    """The loaded model for a user: the cached base with the user's adapter selected."""
    base = load_model(ModelSpec(base=base_model), model_dir)
    version = serving_version(session, user.id if user else None, base.base.fingerprint)
    if version is None or version.adapter_path is None:
        return base, version
    if version.base_fingerprint != base.base.fingerprint:
        raise RegistryError(f"model version {version.id} was trained on another base ({version.base_model_id}), not {base_model}")
    return load_model(ModelSpec(base=base_model, adapter=Path(version.adapter_path)), model_dir), version


def base_version(session: Session, fingerprint: str) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.key == base_key(fingerprint)))
