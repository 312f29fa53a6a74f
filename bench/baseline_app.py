"""The ceiling the pixel is compared against: a Starlette route answering the same GIF, no I/O."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ingest.routes import GIF, GIF_HEADERS


async def gif(request: Request) -> Response:
    return Response(GIF, media_type="image/gif", headers=GIF_HEADERS)


app = Starlette(routes=[Route("/mtracking.gif", gif)])
