"""The pages the service serves itself, from readable files in the package (no build step,
nothing loaded from the internet): the dashboard at `/` (api/static/dashboard) and, with
CM_GRAPHIQL=true, the GraphiQL IDE's assets (api/static/graphiql, vendored: its README.md).
docs/dashboard.md."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

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


async def dashboard(request: Request) -> Response:
    return FileResponse(
        STATIC / "dashboard" / "index.html",
        headers={**PAGE_HEADERS, "Content-Security-Policy": DASHBOARD_POLICY},
    )


def graphiql_page() -> str:
    return (STATIC / "graphiql" / "index.html").read_text(encoding="utf-8")


def routes(settings: Settings) -> list[BaseRoute]:
    found: list[BaseRoute] = [
        Route("/", dashboard, methods=["GET", "HEAD"]),
        Mount("/dashboard", StaticFiles(directory=STATIC / "dashboard"), name="dashboard"),
    ]
    if settings.graphiql:
        found.append(Mount("/graphiql-assets", StaticFiles(directory=STATIC / "graphiql"), name="graphiql"))
    return found
