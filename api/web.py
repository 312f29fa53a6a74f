"""The pages the service serves itself, from readable files in the package (no build step,
nothing loaded from the internet): the dashboard at `/` (api/static/pages/dashboard.html, its
files under /dashboard/ from api/static/dashboard) and, with CM_GRAPHIQL=true, the GraphiQL
page (api/static/pages/graphiql.html) and its assets under /graphiql-assets/ (api/static/graphiql,
vendored: its README.md). The pages are served only by their routes, with their
Content-Security-Policy: the asset directories hold no page. docs/dashboard.md."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from contact_monitor.settings import Settings

STATIC = Path(__file__).parent / "static"
# The pages run only their own files; the API is this origin's (HTTP and websocket).
DASHBOARD_POLICY = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# GraphiQL's editor injects its styles at run time.
GRAPHIQL_POLICY = DASHBOARD_POLICY + "; style-src 'self' 'unsafe-inline'"
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class Assets(StaticFiles):
    """Files of the pages, never sniffed as another type."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


async def dashboard(request: Request) -> Response:
    return FileResponse(
        STATIC / "pages" / "dashboard.html",
        headers={**PAGE_HEADERS, "Content-Security-Policy": DASHBOARD_POLICY},
    )


def graphiql_page() -> str:
    return (STATIC / "pages" / "graphiql.html").read_text(encoding="utf-8")


def routes(settings: Settings) -> list[BaseRoute]:
    found: list[BaseRoute] = [
        Route("/", dashboard, methods=["GET", "HEAD"]),
        Mount("/dashboard", Assets(directory=STATIC / "dashboard"), name="dashboard"),
    ]
    if settings.graphiql:
        found.append(Mount("/graphiql-assets", Assets(directory=STATIC / "graphiql"), name="graphiql"))
    return found
