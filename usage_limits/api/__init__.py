"""The REST API (Django REST framework): usage, history, event ingestion and admin changes.

Mount it with ``path("api/", include("usage_limits.api.urls"))``. The OpenAPI schema needs the
``api`` extra (``pip install django-usage-limits[api]``), see ``docs/api.md``.
"""
