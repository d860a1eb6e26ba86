"""Registering the model a forecast was generated with (base fingerprint + adapter hash).

The rlhf package builds the user-facing registry (activation, rollback) on these rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from advisor.config import DEFAULT_BASE_MODEL
from advisor.forecaster.loading import ADAPTER_META, ModelHandle, ModelSpec, load_model
from db.models import ModelActivation, ModelVersion


def base_key(fingerprint: str) -> str:
    return f"{fingerprint[:32]}+none"


def ensure_base_version(session: Session, handle: ModelHandle) -> ModelVersion:
    base = handle.base
    key = base_key(base.fingerprint)
    row = session.scalar(select(ModelVersion).where(ModelVersion.key == key))
    if row is None:
        row = ModelVersion(
            key=key,
            name=base.base_id,
            kind="base",
            base_model_id=base.base_id,
            base_fingerprint=base.fingerprint,
            metrics={},
        )
        session.add(row)
        session.flush()
    return row


def ensure_model_version(
    session: Session,
    handle: ModelHandle,
    *,
    kind: str | None = None,
    name: str | None = None,
    parent_id: int | None = None,
    user_id: int | None = None,
    profile_id: int | None = None,
    metrics: dict[str, Any] | None = None,
) -> ModelVersion:
    """The ModelVersion row for ``handle``, created on first use (found by content key afterwards)."""
    if handle.adapter_hash is None:
        return ensure_base_version(session, handle)
    row = session.scalar(select(ModelVersion).where(ModelVersion.key == handle.version_key))
    if row is not None:
        return row
    meta: dict[str, Any] = {}
    assert handle.adapter_path is not None
    if (handle.adapter_path / ADAPTER_META).is_file():
        meta = json.loads((handle.adapter_path / ADAPTER_META).read_text())
    if parent_id is None:
        parent_key = meta.get("parent_key")
        parent = session.scalar(select(ModelVersion).where(ModelVersion.key == parent_key)) if parent_key else None
        parent_id = parent.id if parent else ensure_base_version(session, handle).id
    row = ModelVersion(
        key=handle.version_key,
        name=name or meta.get("name") or handle.adapter_path.name,
        kind=kind or meta.get("kind", "adapter"),
        base_model_id=handle.base.base_id,
        base_fingerprint=handle.base.fingerprint,
        adapter_path=str(handle.adapter_path.resolve()),
        adapter_hash=handle.adapter_hash,
        parent_id=parent_id,
        user_id=user_id,
        profile_id=profile_id,
        metrics=metrics or {},
    )
    session.add(row)
    session.flush()
    return row


def latest_version(session: Session, *, kind: str, base_fingerprint: str, base_id: str | None = None) -> ModelVersion | None:
    """The newest registered version of a kind for a base whose adapter is still on disk.

    With no SFT adapter of its own, the default base gets the shipped one (registered on first use;
    see :mod:`advisor.forecaster.shipped`) — refused with a clear error if its files do not match
    their pins.
    """
    rows = session.scalars(
        select(ModelVersion)
        .where(ModelVersion.kind == kind, ModelVersion.base_fingerprint == base_fingerprint)
        .order_by(ModelVersion.id.desc())
    )
    for row in rows:
        if row.adapter_path and Path(row.adapter_path).is_dir():
            return row
    if kind == "sft":
        from advisor.forecaster.shipped import register_shipped  # shipped imports this module

        return register_shipped(session, base_fingerprint, base_id or DEFAULT_BASE_MODEL)
    return None


def active_version_id(session: Session, user_id: int) -> int | None:
    """The user's active model version (newest activation), if they ever activated one."""
    row = session.scalar(select(ModelActivation).where(ModelActivation.user_id == user_id).order_by(ModelActivation.id.desc()))
    return row.model_version_id if row else None


def serving_version(session: Session, user_id: int | None, base_fingerprint: str, base_id: str | None = None) -> ModelVersion | None:
    """The version that writes a user's views: their active one, else the newest shared SFT adapter."""
    if user_id is not None:
        active = active_version_id(session, user_id)
        if active is not None:
            return session.get(ModelVersion, active)
    return latest_version(session, kind="sft", base_fingerprint=base_fingerprint, base_id=base_id)


def load_serving_model(factory: sessionmaker[Session], base_model: str, model_dir: Path, user_id: int | None) -> tuple[ModelHandle, ModelVersion | None]:
    """The model that writes a user's views (:func:`serving_version`; the base when no adapter exists yet) and
    its version. Bases and adapters are loaded once per process (:func:`advisor.forecaster.loading.load_model`)."""
    base = load_model(ModelSpec(base=base_model), model_dir)
    with factory() as session:
        version = serving_version(session, user_id, base.base.fingerprint)
        adapter = version.adapter_path if version is not None else None
    if not adapter:
        return base, version
    return load_model(ModelSpec(base=base_model, adapter=Path(adapter)), model_dir), version
