"""Mautic's form embed, served by this server: GET /form/generate.js?id=N (writes the form where
the script tag is and loads the form script), GET /form/N (a page holding the form) and
GET /media/js/mautic-form.js (our readable form script, mtc_js/mautic-form.js). The markup:
contact_monitor/core/form_html.py. docs/forms.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
from functools import lru_cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from contact_monitor.core.form_html import form_html
from contact_monitor.core.services import Services
from contact_monitor.storage.forms import Form
from mtc_js.routes import CACHE_CONTROL, public_address

# Forms change when an admin edits them: a browser may keep one a minute.
FORM_CACHE_CONTROL = "public, max-age=60"
# The standalone page runs only this server's script; the form's own style attributes stay.
FORM_PAGE_POLICY = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; base-uri 'none'"
)


@lru_cache(maxsize=1)
def form_script() -> tuple[bytes, str]:
    body = resources.files("mtc_js").joinpath("mautic-form.js").read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


async def mautic_form_script(request: Request) -> Response:
    body, etag = form_script()
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/javascript", headers=headers)


async def _published_form(request: Request, raw_id: str | None) -> tuple[Form | None, str | None]:
    """The form if it takes submissions now, and this server's address as browsers reach it."""
    services: Services = request.state.services
    address = public_address(request, services.settings)
    if address is None or not raw_id or not raw_id.isascii() or not raw_id.isdigit() or len(raw_id) > 9:
        return None, None
    form = await services.storage.forms.get(int(raw_id))
    if form is None or form.status(dt.datetime.now(dt.UTC)) != "published":
        return None, None
    host, scheme, _ = address
    return form, f"{scheme}//{host}"


async def _markup(request: Request, form: Form, server: str) -> str:
    fields = await request.state.services.storage.fields.all()
    return form_html(form, server, {f.alias: f.type for f in fields})


async def generate_js(request: Request) -> Response:
    """As Mautic's: an empty script for a form that does not exist or takes nothing now."""
    form, server = await _published_form(request, request.query_params.get("id"))
    if form is None or server is None:
        return Response("", media_type="text/javascript", headers={"Cache-Control": "no-cache"})
    markup = json.dumps(await _markup(request, form, server))
    script = json.dumps(f"{server}/media/js/mautic-form.js")
    body = f"""(function () {{
    var html = {markup};
    var here = document.currentScript;
    if (here) {{
        here.insertAdjacentHTML('afterend', html);
    }} else {{
        document.write(html);
    }}
    if (window.MauticSDK && window.MauticSDK.onLoad) {{
        window.MauticSDK.onLoad();
    }} else if (!document.querySelector('script[data-mautic-form-script]')) {{
        var tag = document.createElement('script');
        tag.src = {script};
        tag.setAttribute('data-mautic-form-script', '1');
        document.getElementsByTagName('head')[0].appendChild(tag);
    }}
}})();
"""
    return Response(body, media_type="text/javascript", headers={"Cache-Control": FORM_CACHE_CONTROL})


async def form_page(request: Request) -> Response:
    form, server = await _published_form(request, request.path_params["form_id"])
    if form is None or server is None:
        return PlainTextResponse("This form is no longer available.", status_code=404)
    page = (
        "<!doctype html><html><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(form.name)}</title>"
        f'<script src="{html.escape(server)}/media/js/mautic-form.js" defer></script>'
        "</head><body>"
        f"{await _markup(request, form, server)}"
        "</body></html>"
    )
    headers = {"Cache-Control": FORM_CACHE_CONTROL, "Content-Security-Policy": FORM_PAGE_POLICY}
    return HTMLResponse(page, headers=headers)


routes = [
    Route("/media/js/mautic-form.js", mautic_form_script, methods=["GET", "HEAD"]),
    Route("/form/generate.js", generate_js, methods=["GET", "HEAD"]),
    Route("/form/{form_id}", form_page, methods=["GET", "HEAD"]),
]
