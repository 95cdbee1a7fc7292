"""Figures the proofs measure, collected for ``docs/reliability.md``.

Each proof records one row per store and database (trials, threads, units, admitted, lost,
doubled, seconds...). With ``RELIABILITY_REPORT=path`` set, the session merges its rows into the
JSON file at ``path`` (rows of other databases already there are kept), so running the suite on
SQLite, PostgreSQL and MariaDB in turn fills one file; ``python -m tests.reliability.report path``
then rewrites the figures section of ``docs/reliability.md`` from it.
"""

from __future__ import annotations

import json
import os
import platform
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPORT_ENV = "RELIABILITY_REPORT"


@dataclass
class Figures:
    """Rows recorded during one test session."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, proof: str, store: str, database: str, **values: Any) -> None:
        with self._lock:
            self.rows.append({"proof": proof, "store": store, "database": database, **values})

    def write(self, path: Path) -> None:
        """Merge this session's rows into ``path``, replacing older rows of the same key."""
        existing: list[dict[str, Any]] = []
        if path.exists():
            existing = json.loads(path.read_text(encoding="utf-8")).get("rows", [])
        mine = {_row_key(row) for row in self.rows}
        merged = [row for row in existing if _row_key(row) not in mine] + self.rows
        merged.sort(key=_row_key)
        document = {
            "generated_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}",
            "rows": merged,
        }
        path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def discrepancy(expected: int, stored: int) -> dict[str, int]:
    """What a proof reports of a counter against what it should hold: units lost, units doubled."""
    return {"lost": max(expected - stored, 0), "doubled": max(stored - expected, 0)}


def _row_key(row: dict[str, Any]) -> tuple[str, ...]:
    variant = str(row.get("variant", ""))
    surface = str(row.get("surface", ""))
    return (str(row["proof"]), variant, str(row["store"]), surface, str(row["database"]))


def report_path() -> Path | None:
    value = os.environ.get(REPORT_ENV)
    return Path(value) if value else None
