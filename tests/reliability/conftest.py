"""Fixtures of the reliability suite: the store under proof, a thread crew, the figures.

Everything collected under ``tests/reliability/`` carries the ``reliability`` marker, so a
developer can leave the suite out locally with ``pytest -m "not reliability"``; CI runs it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connections
from django.test import override_settings

from tests.conftest import service_missing

from .crew import Crew
from .figures import Figures, report_path
from .stores import STORE_TARGETS, StoreTarget
from .surfaces import SURFACES, Surface

HERE = Path(__file__).resolve().parent

# Database vendors ("sqlite", "postgresql", "mysql") the Redis store is proved behind; unset:
# every one. The Redis store is one more store, so CI proves it once, behind PostgreSQL, rather
# than once per database (behind SQLite its first-use seeding makes the run twice as long).
REDIS_DATABASES_ENV = "RELIABILITY_REDIS_DATABASES"


def _redis_left_out() -> bool:
    wanted = os.environ.get(REDIS_DATABASES_ENV)
    if not wanted:
        return False
    return connections["default"].vendor not in {v.strip() for v in wanted.split(",")}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the suite, and leave out the proofs a surface does not join (``Surface.proofs``)."""
    kept, left_out = [], []
    without_redis = _redis_left_out()
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.reliability)
            callspec = getattr(item, "callspec", None)
            chosen = callspec.params.get("surface") if callspec is not None else None
            proof = item.path.stem.removeprefix("test_")
            operation = callspec.params.get("operation") if callspec is not None else None
            store = callspec.params.get("store") if callspec is not None else None
            if without_redis and isinstance(store, StoreTarget) and store.name == "redis":
                left_out.append(item)
                continue
            if isinstance(chosen, Surface) and (
                proof not in chosen.proofs
                or (isinstance(operation, str) and operation not in chosen.operations)
                or (
                    proof != "bad_input"
                    and chosen.load_stores is not None
                    and isinstance(store, StoreTarget)
                    and store.name not in chosen.load_stores
                )
            ):
                left_out.append(item)
                continue
        kept.append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


@pytest.fixture(scope="session")
def figures() -> Iterator[Figures]:
    collected = Figures()
    yield collected
    path = report_path()
    if path is not None and collected.rows:
        collected.write(path)


@pytest.fixture(params=STORE_TARGETS, ids=lambda target: target.name)
def store(request: pytest.FixtureRequest) -> Iterator[StoreTarget]:
    """The store under proof, configured as ``USAGE_LIMITS["STORE"]`` for the test."""
    reason = request.param.unavailable_reason()
    if reason is not None:
        service_missing(reason)
    target: StoreTarget = request.param.for_one_test()
    try:
        with override_settings(USAGE_LIMITS=target.usage_limits_settings()):
            yield target
    finally:
        target.clean_up()


@pytest.fixture(params=SURFACES, ids=lambda surface: surface.name)
def surface(request: pytest.FixtureRequest) -> Iterator[Surface]:
    """The door the proof goes through: the engine, a decorated view, the REST API."""
    chosen: Surface = request.param.for_one_test()
    with override_settings(ROOT_URLCONF="tests.reliability.edges"):
        yield chosen


@pytest.fixture
def crew_of(transactional_db: None) -> Iterator[Callable[[int], Crew]]:
    """Make crews that are closed (threads stopped, connections closed) before the flush."""
    made: list[Crew] = []

    def make(size: int) -> Crew:
        crew = Crew(size)
        made.append(crew)
        return crew

    yield make
    for crew in made:
        crew.close()
    connections.close_all()
