"""Comparing rendered HTML as a browser would parse it (Django's ``assertHTMLEqual``)."""

from __future__ import annotations

from django.test import SimpleTestCase

_case = SimpleTestCase()


def assert_html_equal(actual: str, expected: str) -> None:
    """Equal as HTML: attribute order, whitespace between tags and class order do not count."""
    _case.maxDiff = None
    _case.assertHTMLEqual(actual, expected)


def assert_contains_html(haystack: str, needle: str, count: int | None = None) -> None:
    _case.assertInHTML(needle, haystack, count=count)
