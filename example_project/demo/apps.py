from __future__ import annotations

from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The example site's own pages and the ``rundemo`` command."""

    name = "example_project.demo"
    label = "demo"
    verbose_name = "Example site"
