"""Helpers for the test suites of projects that use django-usage-limits (needs factory-boy)."""
