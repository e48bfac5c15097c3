"""REST pagination shared by every endpoint."""

from __future__ import annotations

from rest_framework.pagination import CursorPagination


class DefaultCursorPagination(CursorPagination):
    """Cursor pagination: stable under inserts, which polling clients need."""

    ordering = "-pk"
    page_size_query_param = "page_size"
    max_page_size = 500
