"""The control plane's state: deployments, jobs, their log lines, registered agents and bench runs, in a
database through SQLAlchemy (SQLite by default, PostgreSQL for a shared control plane).

The schema is owned by the Alembic migrations in ``control/migrations``; ``open_database`` brings a
database up to the newest one, so an older control plane's database keeps working after an upgrade.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from alembic import command
from alembic.config import Config
from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from gatewright.errors import GatewrightError

MIGRATIONS = Path(__file__).parent / "migrations"


def now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class DeploymentRow(Base):
    __tablename__ = "deployments"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    spec: Mapped[dict[str, Any]]  # the normalized spec as applied (control.spec.Deployment.to_json)
    generation: Mapped[int] = mapped_column(Integer, default=1)  # grows with every change of the spec
    observed: Mapped[int] = mapped_column(Integer, default=0)  # the generation the status describes
    phase: Mapped[str] = mapped_column(String(16), default="Pending")
    reason: Mapped[str] = mapped_column(Text, default="")
    job_id: Mapped[str | None] = mapped_column(String(32), default=None)
    device: Mapped[str | None] = mapped_column(String(255), default=None)
    bundle: Mapped[str | None] = mapped_column(Text, default=None)  # the firmware's reference in the store
    endpoints: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    deleting: Mapped[bool] = mapped_column(default=False)
    created: Mapped[datetime] = mapped_column(default=now)
    updated: Mapped[datetime] = mapped_column(default=now, onupdate=now)


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    deployment: Mapped[str] = mapped_column(String(63), index=True)
    generation: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16), default="build")
    state: Mapped[str] = mapped_column(String(16), default="queued")  # queued running succeeded failed cancelled
    reason: Mapped[str] = mapped_column(Text, default="")
    request: Mapped[dict[str, Any]]  # what to build: model, calibration, target, options, the store key
    created: Mapped[datetime] = mapped_column(default=now)
    started: Mapped[datetime | None] = mapped_column(default=None)
    finished: Mapped[datetime | None] = mapped_column(default=None)


class LogLine(Base):
    """One line of a deployment's events or of its build job's output, kept for good."""

    __tablename__ = "log_lines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    deployment: Mapped[str] = mapped_column(String(63), index=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True, default=None)
    time: Mapped[datetime] = mapped_column(default=now)
    text: Mapped[str] = mapped_column(Text)


class AgentRow(Base):
    """A remote agent whose devices join the inventory. The token is a credential: never returned."""

    __tablename__ = "agents"

    address: Mapped[str] = mapped_column(String(255), primary_key=True)
    token: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[datetime] = mapped_column(default=now)


class BenchRunRow(Base):
    """One bench run: its full configuration and what it measured (``gatewright.bench``)."""

    __tablename__ = "bench_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    batch: Mapped[str] = mapped_column(String(64), index=True)  # one `gatewright bench run` invocation
    experiment: Mapped[str] = mapped_column(String(128), index=True)
    application: Mapped[str] = mapped_column(String(128))
    target: Mapped[str] = mapped_column(String(255))
    device: Mapped[str] = mapped_column(String(255))
    build_target: Mapped[str | None] = mapped_column(String(32), default=None)
    predicted: Mapped[bool] = mapped_column(default=False)
    measurement: Mapped[str] = mapped_column(String(128))
    scenario: Mapped[str | None] = mapped_column(String(32), default=None)
    optimization: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), default="queued")  # queued building measuring succeeded failed
    reason: Mapped[str] = mapped_column(Text, default="")
    config: Mapped[dict[str, Any]]
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    build_job: Mapped[str | None] = mapped_column(String(32), default=None)
    measure_job: Mapped[str | None] = mapped_column(String(32), default=None)
    created: Mapped[datetime] = mapped_column(default=now)
    finished: Mapped[datetime | None] = mapped_column(default=None)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "batch": self.batch,
            "experiment": self.experiment,
            "application": self.application,
            "target": self.target,
            "device": self.device,
            "build_target": self.build_target,
            "predicted": self.predicted,
            "measurement": self.measurement,
            "scenario": self.scenario,
            "optimization": self.optimization,
            "state": self.state,
            "reason": self.reason,
            "created": self.created.isoformat(timespec="seconds") if self.created else None,
            "config": self.config,
            "metrics": self.metrics or {},
        }


def update(sessions: sessionmaker[Any], model: type[Base], key: str, **fields: Any) -> None:
    """Set ``fields`` on the row ``key`` of ``model`` (nothing if it is gone), in one transaction."""
    with sessions() as session:
        row = session.get(model, key)
        if row is not None:
            for name, value in fields.items():
                setattr(row, name, value)
            session.commit()


def database_url(url: str | None, data: Path) -> str:
    """``--db`` as given, or the SQLite file in the data folder."""
    return url or f"sqlite:///{(data / 'gatewright.db').resolve()}"


def redact(url: str) -> str:
    """A database URL fit for logs: the password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable database URL>"


def open_database(url: str) -> sessionmaker[Any]:
    """Connect, migrate to the newest schema, and return a session factory."""
    try:
        engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, ModuleNotFoundError) as exc:
        raise GatewrightError(
            f"--db {redact(url)}: not a usable database URL ({exc}); "
            "use sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST/DB"
        ) from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        migrate(engine)
    except OperationalError as exc:
        raise GatewrightError(f"database {redact(url)}: cannot connect or migrate: {exc.orig}") from None
    return sessionmaker(engine, expire_on_commit=False)


def migrate(engine: Engine) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (the API) do not wait for the writer (the loop)
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
