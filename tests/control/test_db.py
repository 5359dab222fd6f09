"""The database: migrations build exactly the schema the models declare, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from gatewright.control.db import Base, DeploymentRow, open_database, redact
from gatewright.errors import GatewrightError


def _differences(url: str) -> list[object]:
    open_database(url)
    engine = create_engine(url)
    with engine.connect() as connection:
        return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


def test_sqlite_migrations_match_the_models_and_are_idempotent(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    assert _differences(url) == []
    sessions = open_database(url)  # a second start migrates nothing and keeps the rows
    with sessions() as session:
        session.add(DeploymentRow(name="a", spec={"x": [1, 2]}, endpoints={}))
        session.commit()
    with open_database(url)() as session:
        row = session.get(DeploymentRow, "a")
        assert row is not None and row.spec == {"x": [1, 2]} and row.phase == "Pending"
    tables = set(inspect(create_engine(url)).get_table_names())
    assert {"deployments", "jobs", "log_lines", "agents", "alembic_version"} <= tables


@pytest.mark.postgres
def test_postgres_migrations_match_the_models(postgres_url: str) -> None:
    assert _differences(postgres_url) == []


def test_a_bad_database_url_says_what_to_use_and_hides_the_password() -> None:
    with pytest.raises(GatewrightError) as error:
        open_database("postgresql+psycopg://u:hunter2@127.0.0.1:9/db")
    assert "hunter2" not in str(error.value) and "cannot connect" in str(error.value)
    with pytest.raises(GatewrightError, match="sqlite:///PATH or postgresql"):
        open_database("nosuchdb://x")
    assert redact("postgresql+psycopg://u:hunter2@h/db") == "postgresql+psycopg://u:***@h/db"
