"""The dashboard's audit log page: ``/dashboard/audit``, who changed what, newest first.

The same filters as ``GET /v1/audit`` (resource, key, actor, via, since, until) as a form; each
entry with its changes (``path: before → after``). It reads ``edge.routes.audit.entries``, so
the page and the API show the same entries. The log is an admin's: the page takes the admin
role.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collector.audit import RESOURCES, VIAS
from edge.api.responses import Problem
from edge.pages.frame import needing, page
from edge.routes.audit import asked, entries

__all__ = ["routes", "shown"]

_FILTERS = ("resource", "key", "actor", "via", "since", "until", "cursor")


def shown(value: Any) -> str:
    """A changed value, short enough for a table cell (absent: –).

    Examples:
        >>> shown(None), shown("sale"), shown({"kind": "ab"})
        ('–', 'sale', '{"kind":"ab"}')
    """
    if value is None:
        return "–"
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    return text if len(text) <= 120 else text[:117] + "…"


@needing("admin")
async def audit_page(request: Request) -> Response:
    wanted = {name: request.query_params[name].strip() for name in _FILTERS
              if request.query_params.get(name, "").strip()}  # fmt: skip
    found: list[dict[str, Any]] = []
    following, problem, status = None, None, 200
    try:
        found, following = await entries(request.state.store, asked({**wanted, "limit": "50"}))
    except Problem as exc:
        problem, status = exc.message, exc.status
    later = {k: v for k, v in wanted.items() if k != "cursor"}
    return page(request, "audit.html", status, entries=found, wanted=wanted, later=later,
                 next_cursor=following, problem=problem, resources=RESOURCES, vias=VIAS,
                 shown=shown, section="audit")  # fmt: skip


routes = [Route("/dashboard/audit", audit_page)]
