"""Form submissions: read `mauticform[...]` parameters and validate them against the form (pure)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from contact_monitor.core.fields import FieldValue, FieldValueError, validate_value
from contact_monitor.storage.fields import FieldDefinition
from contact_monitor.storage.forms import Form
from ingest.payload import Params

_WRAPPED = re.compile(r"^mauticform\[([A-Za-z0-9_]+)\]$")
MAX_RESULT_LENGTH = 1024
# Form ids are 1, 2, 3, ...: ASCII digits, at most 9 of them; anything else names no form.
FORM_ID = re.compile(r"[0-9]{1,9}")
# A form name as Mautic's element ids use it: letters, digits, _ and -.
FORM_NAME = re.compile(r"[^A-Za-z0-9_-]")
MAX_FORM_NAME = 64


@dataclass(frozen=True, slots=True)
class Submission:
    form_id: int | None
    values: Mapping[str, str]
    return_url: str | None
    wants_json: bool
    # Mautic's form HTML: the form's name (element ids `mauticform_<name>_...`), and whether its
    # form script waits for the answer in a hidden iframe (`mauticform[messenger]=1`).
    form_name: str | None = None
    messenger: bool = False


def _text(value: str | list[str]) -> str:
    return ", ".join(value) if isinstance(value, list) else value


def read_submission(params: Params, *, wants_json: bool) -> Submission:
    """`mauticform[alias]=value` as Mautic's form HTML posts it; plain `alias=value` (mobile apps)
    counts too, the wrapped form winning."""
    plain: dict[str, str] = {}
    wrapped: dict[str, str] = {}
    for key, value in params.items():
        match = _WRAPPED.match(key)
        if match:
            wrapped[match.group(1)] = _text(value)
        else:
            plain[key] = _text(value)
    values = {**plain, **wrapped}
    raw_id = values.pop("formId", None) or plain.get("formid")
    form_id = int(raw_id.strip()) if raw_id and FORM_ID.fullmatch(raw_id.strip()) else None
    return_url = values.pop("return", None) or None
    form_name = values.pop("formName", None) or None
    messenger = values.pop("messenger", "") == "1"
    return Submission(
        form_id,
        values,
        return_url,
        wants_json or plain.get("ajax") == "1",
        form_name=FORM_NAME.sub("", form_name)[:MAX_FORM_NAME] if form_name else None,
        messenger=messenger,
    )


def validate_submission(
    form: Form, submission: Submission, registry: Mapping[str, FieldDefinition]
) -> tuple[dict[str, FieldValue], dict[str, str], dict[str, str]]:
    """(contact values, results by form field, errors by form field). Mapped fields are validated
    by their contact field's type; required fields must be non-empty."""
    contact_values: dict[str, FieldValue] = {}
    results: dict[str, str] = {}
    errors: dict[str, str] = {}
    for field in form.fields:
        raw = submission.values.get(field.name, "").strip()
        if not raw:
            if field.required:
                errors[field.name] = f"'{field.label}' is required."
            continue
        results[field.name] = raw[:MAX_RESULT_LENGTH]
        definition = registry.get(field.contact_field) if field.contact_field else None
        if definition is None:
            continue
        try:
            value = validate_value(definition, raw)
        except FieldValueError as exc:
            errors[field.name] = f"'{field.label}': {exc}."
            continue
        if value is not None:
            contact_values[definition.alias] = value
    return contact_values, results, errors
