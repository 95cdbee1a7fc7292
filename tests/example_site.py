"""Running the example project's pages inside the test suite (same apps, its URLs and files)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any
from unittest import mock

from django.core.management import call_command

REPO = Path(__file__).resolve().parent.parent


def example_usage_limits() -> dict[str, Any]:
    """The example project's ``USAGE_LIMITS``, read without letting its settings module touch
    this process's environment (it reads ``DATABASE_URL`` and an optional ``.env`` file)."""
    with mock.patch.dict(os.environ):
        os.environ.pop("DATABASE_URL", None)
        module = importlib.import_module("example_project.settings")
    limits: dict[str, Any] = module.USAGE_LIMITS
    return limits


def use_example_site(settings: Any) -> None:
    """Point ``settings`` (pytest-django's fixture) at the example project's pages and plans."""
    settings.ROOT_URLCONF = "example_project.urls"
    settings.TEMPLATES = [
        {**settings.TEMPLATES[0], "DIRS": [REPO / "templates"]},
    ]
    settings.STATICFILES_DIRS = [REPO / "static"]
    settings.LOGIN_URL = "login"
    settings.LOGIN_REDIRECT_URL = "home"
    settings.USAGE_LIMITS = example_usage_limits()


def load_demo_data() -> None:
    """The example's demo tenants: acme (free, ~30 %), globex (starter, ~70 %), initech (pro,
    ~95 %), users free / starter / pro with the username as password."""
    from io import StringIO

    call_command("usage_limits_demo", stdout=StringIO())
