"""Pages of history: ``?limit=90&offset=0`` (the seeds' ``getUsageHistory({limit: 90})``)."""

from __future__ import annotations

from typing import Any

from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response


class HistoryPagination(LimitOffsetPagination):
    default_limit = 30
    max_limit = 1000

    def get_paginated_response(self, data: Any) -> Response:
        return Response(
            {
                "success": True,
                "data": {
                    "count": self.count,
                    "next": self.get_next_link(),
                    "previous": self.get_previous_link(),
                    "results": data,
                },
            }
        )
