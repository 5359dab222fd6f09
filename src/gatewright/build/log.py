"""Build step logging: every step logs a timestamped start and end, its command, and its duration."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass
class StepRecord:
    name: str
    started: str
    duration_s: float = 0.0
    summary: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "started": self.started,
            "duration_s": round(self.duration_s, 3),
            "summary": self.summary,
        }


@dataclass
class BuildLog:
    """Collects log lines and step records; ``echo`` also shows each line as it happens."""

    echo: Callable[[str], None] | None = None
    lines: list[str] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)

    def write(self, step: str, event: str, text: str = "") -> None:
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        line = f"{stamp} {step:<10} {event:<6} {text}".rstrip()
        self.lines.append(line)
        if self.echo:
            self.echo(line)

    @contextmanager
    def step(self, name: str, command: str) -> Iterator[StepRecord]:
        """Log start and end of a step; the body may set ``record.summary`` for the end line."""
        record = StepRecord(name, datetime.now(UTC).isoformat(timespec="seconds"))
        self.write(name, "start", command)
        start = time.perf_counter()
        try:
            yield record
        except BaseException as exc:
            record.duration_s = time.perf_counter() - start
            self.write(name, "failed", f"{record.duration_s:.1f} s  {type(exc).__name__}")
            raise
        record.duration_s = time.perf_counter() - start
        self.steps.append(record)
        self.write(name, "done", f"{record.duration_s:.1f} s  {record.summary}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"
