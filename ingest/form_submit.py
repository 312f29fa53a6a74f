"""POST /form/submit?formId=N: a form post from a web page or a mobile app.

The submitter is identified like a tracking request, with every mapped contact field (publicly
updatable or not): an existing, identified contact with the submitted email survives and the
anonymous visitor is merged into it (docs/identity.md, "Form submissions").

Every answer, errors included, is in the form protocol (JSON for scripts and apps, a page or a
redirect for a browser's post): a browser that posted a page must get a page back, so this
endpoint answers its own 413 and 503 instead of the app's JSON error handler.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import json
import logging
from urllib.parse import quote, urlsplit

import pymongo
from pymongo.errors import PyMongoError
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from contact_monitor.core.errors import PayloadTooLarge
from contact_monitor.core.services import Services
from contact_monitor.storage.forms import Form
from ingest.cors import origin_allowed
from ingest.forms import Submission, read_submission, validate_submission
from ingest.pipeline import IngestPipeline
from ingest.routes import build_visit, collect_params, read_body, visitor_address, with_cookies

log = logging.getLogger(__name__)
UNAVAILABLE = "This form is no longer available."


def _origin(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def safe_return(url: str, request: Request, allowed_origins: tuple[str, ...]) -> bool:
    """`mauticform[return]` is followed only to an http(s) URL of a tracked site (CM_CORS_ORIGINS)
    or of the page that posted the form (its Origin, else its Referer): never `javascript:` or
    another site, so the form cannot be used as an open redirect."""
    origin = _origin(url)
    if origin is None:
        return False
    # `*` lets any site read tracking answers (CORS); it does not make every site a redirect target.
    if origin_allowed(origin, tuple(entry for entry in allowed_origins if entry != "*")):
        return True
    poster = request.headers.get("origin") or _origin(request.headers.get("referer", "")) or ""
    return poster.lower() == origin


def unavailable(form: Form | None, status: str) -> str:
    """Why a form takes no submission (Mautic's messages)."""
    if form is not None and status == "pending" and form.publish_up is not None:
        return f"This form will be available on {form.publish_up:%Y-%m-%d %H:%M} UTC."
    if form is not None and status == "expired" and form.publish_down is not None:
        return f"This form expired on {form.publish_down:%Y-%m-%d %H:%M} UTC."
    return UNAVAILABLE


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return (
        request.headers.get("x-requested-with", "").lower() == "xmlhttprequest"
        or ("application/json" in accept and "text/html" not in accept)
        or request.query_params.get("ajax") == "1"
    )


def _page(message: str, status: int = 200) -> HTMLResponse:
    body = f"<!doctype html><meta charset=utf-8><title>Form</title><p>{html.escape(message)}</p>"
    return HTMLResponse(body, status_code=status)


def form_name(form: Form | None, submission: Submission | None) -> str | None:
    """The name Mautic's form script knows the form by: the one it posted, else its alias."""
    if submission is not None and submission.form_name:
        return submission.form_name
    return form.alias if form is not None else None


def answer(body: dict[str, object], form: Form | None, submission: Submission | None) -> Response:
    """A JSON answer (scripts, apps), or for Mautic's form script (`mauticform[messenger]`) the
    page its hidden iframe loads, handing the same JSON to the page that posted the form as
    Mautic's does: `parent.postMessage(JSON string, "*")`. Both carry `formName`."""
    name = form_name(form, submission)
    if name is not None:
        body = {**body, "formName": name}
    if submission is not None and submission.messenger and not submission.wants_json:
        text = json.dumps(json.dumps(body))  # a JS string literal holding the JSON
        for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
            text = text.replace(char, escaped)  # nothing in it can end the script element
        page = (
            "<!doctype html><meta charset=utf-8><title>Form</title>"
            f'<script>parent.postMessage({text}, "*");</script>'
        )
        return HTMLResponse(page)
    return JSONResponse(body)


def failure(
    submission: Submission | None,
    wants_json: bool,
    *,
    message: str,
    errors: dict[str, str] | None = None,
    form: Form | None = None,
) -> Response:
    if wants_json or (submission is not None and submission.messenger):
        body: dict[str, object] = {"success": 0}
        if errors:
            body["validationErrors"] = errors
        else:
            body["errorMessage"] = message
        return answer(body, form, submission)
    text = message if not errors else "Errors: " + " ".join(errors.values())
    if submission is not None and submission.return_url:
        separator = "&" if "?" in submission.return_url else "?"
        anchor = "#" + form.alias if form else ""
        return RedirectResponse(f"{submission.return_url}{separator}mauticError={quote(text)}{anchor}", 302)
    return _page(text, 400)


def success(form: Form, submission: Submission, results: dict[str, str]) -> Response:
    if submission.wants_json or submission.messenger:
        body: dict[str, object] = {"success": 1, "results": results}
        if form.post_action == "redirect":
            body["redirect"] = form.post_action_property
        elif form.post_action_property:
            body["successMessage"] = form.post_action_property
        return answer(body, form, submission)
    if form.post_action == "redirect":
        return RedirectResponse(form.post_action_property, 302)
    if form.post_action == "return" and submission.return_url:
        separator = "&" if "?" in submission.return_url else "?"
        message = (
            f"{separator}mauticMessage={quote(form.post_action_property)}"
            if form.post_action_property
            else ""
        )
        return RedirectResponse(submission.return_url + message, 302)
    return _page(form.post_action_property or "Thank you!")


async def form_submit(request: Request) -> Response:
    services: Services = request.state.services
    settings = services.settings
    wants_json = _wants_json(request)
    if request.method != "POST":
        return (
            failure(None, wants_json, message="Forms are submitted with POST.")
            if wants_json
            else _page("Forms are submitted with POST.", 405)
        )
    try:
        body = await read_body(request, settings.max_body_bytes)
    except PayloadTooLarge:
        response = failure(
            None, wants_json, message=f"The submission is larger than {settings.max_body_bytes} bytes."
        )
        response.status_code = 413
        return response
    builder = await collect_params(request, body, settings.max_body_bytes)
    submission = read_submission(builder.params, wants_json=wants_json)
    if submission.return_url and not safe_return(submission.return_url, request, settings.cors_origins):
        log.warning("form return URL refused (not an allowed site): %.200s", submission.return_url)
        submission = dataclasses.replace(submission, return_url=None)
    try:
        with pymongo.timeout(settings.track_timeout_seconds):  # as every tracking request
            form = (
                await services.storage.forms.get(submission.form_id)
                if submission.form_id is not None
                else None
            )
            status = form.status(dt.datetime.now(dt.UTC)) if form is not None else "deleted"
            if form is None or status != "published":
                return failure(
                    submission, submission.wants_json, message=unavailable(form, status), form=form
                )
            registry = await services.fields.get()
            pipeline: IngestPipeline = request.state.pipeline
            values, results, errors = validate_submission(form, submission, registry)
            if errors:
                return failure(
                    submission, submission.wants_json, message="Invalid submission", errors=errors, form=form
                )
            visit = build_visit(
                request,
                settings,
                "form",
                builder,
                address=visitor_address(request, settings),
                user_agent=await pipeline.agents.parse(request.headers.get("user-agent", "")),
                referer=submission.return_url,
                values=values,
                form={"form_id": form.id, "form_name": form.name, "values": results},
            )
            if form.kiosk:
                visit = dataclasses.replace(visit, kiosk=True)
            outcome = await pipeline.track(visit)
    except PyMongoError:
        log.exception("form submission could not be stored")
        response = failure(submission, submission.wants_json, message="Please try again in a moment.")
        response.status_code = 503
        return response
    if form.kiosk:  # a shared terminal: the next person must not be this one
        return success(form, submission, results)
    return with_cookies(success(form, submission, results), request, outcome)


routes = [Route("/form/submit", form_submit, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])]
