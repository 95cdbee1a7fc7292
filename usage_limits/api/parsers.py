"""The API's JSON parser: DRF's, with a body nested too deeply a 400 rather than a server error.

Python's JSON parser gives up with ``RecursionError`` on deep nesting (a 200 KB body of brackets
is enough), which DRF's parser lets through as a 500.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class JSONBodyParser(JSONParser):
    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None
