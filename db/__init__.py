"""Persistence: typed ORM models, engine/session factory, Alembic migrations, small query functions.

Knows nothing of models, Streamlit or brokers.
"""
