"""Running the example project's pages inside the test suite (same apps, its URLs and files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management import call_command

from example_project import settings as example_settings

REPO = Path(__file__).resolve().parent.parent


def use_example_site(settings: Any) -> None:
    """Point ``settings`` (pytest-django's fixture) at the example project's pages and plans."""
    settings.ROOT_URLCONF = "example_project.urls"
    settings.TEMPLATES = [
        {**settings.TEMPLATES[0], "DIRS": [REPO / "templates"]},
    ]
    settings.STATICFILES_DIRS = [REPO / "static"]
    settings.LOGIN_URL = "login"
    settings.LOGIN_REDIRECT_URL = "home"
    settings.USAGE_LIMITS = example_settings.USAGE_LIMITS


def load_demo_data() -> None:
    """The example's demo tenants: acme (free, ~30 %), globex (starter, ~70 %), initech (pro,
    ~95 %), users free / starter / pro with the username as password."""
    from io import StringIO

    call_command("usage_limits_demo", stdout=StringIO())
