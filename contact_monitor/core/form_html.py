"""A form's HTML as Mautic renders it (pure): the same element ids, classes, names and hidden
fields, so that Mautic's form script, our own (mtc_js/mautic-form.js) and pages styled for
Mautic forms work with it unchanged. Every value is HTML-escaped. docs/forms.md.

    <div id="mauticform_wrapper_<alias>" class="mauticform_wrapper">
      <form ... id="mauticform_<alias>" data-mautic-form="<alias>" enctype="multipart/form-data"
            action="<server>/form/submit?formId=<id>">
        <div class="mauticform-error" id="mauticform_<alias>_error"></div>
        <div class="mauticform-message" id="mauticform_<alias>_message"></div>
        <div class="mauticform-innerform"><div class="mauticform-page-wrapper mauticform-page-1">
          <div id="mauticform_<alias>_<field>" class="mauticform-row mauticform-<type>
               mauticform-field-<n> [mauticform-required]" data-validate="<field>" ...>
            <label id="mauticform_label_<alias>_<field>" for="mauticform_input_<alias>_<field>">
            <input id="mauticform_input_<alias>_<field>" name="mauticform[<field>]" ...>
            <span class="mauticform-errormsg" style="display: none;">This is required.</span>
          </div> ... the submit button row ...
        </div></div>
        <input type="hidden" name="mauticform[formId]" ...> (also return, formName)
      </form>
    </div>
"""

from __future__ import annotations

import html
from collections.abc import Mapping

from contact_monitor.storage.forms import Form

# Contact field types that have an input type of their own; everything else is a text input.
INPUT_TYPES = {"email": "email", "tel": "tel", "url": "url", "number": "number", "date": "date"}
REQUIRED_MESSAGE = "This is required."
SUBMITTING_MESSAGE = "Please wait..."


def _a(value: object) -> str:
    return html.escape(str(value), quote=True)


def form_html(form: Form, server: str, field_types: Mapping[str, str]) -> str:
    """The form's markup, posting to `server` (scheme and host, no trailing slash);
    `field_types`: contact field alias -> its type (the input types)."""
    alias = form.alias
    rows = []
    for n, field in enumerate(form.fields, start=1):
        kind = field_types.get(field.contact_field or "", "text")
        input_type = INPUT_TYPES.get(kind, "text")
        element = f"mauticform_{alias}_{field.name}"
        input_id = f"mauticform_input_{alias}_{field.name}"
        classes = f"mauticform-row mauticform-{input_type} mauticform-field-{n}"
        validate = ""
        if field.required:
            classes += " mauticform-required"
            validate = f' data-validate="{_a(field.name)}" data-validation-type="{_a(input_type)}"'
        rows.append(
            f'<div id="{_a(element)}" class="{classes}"{validate}>'
            f'<label id="mauticform_label_{_a(alias)}_{_a(field.name)}" for="{_a(input_id)}" '
            f'class="mauticform-label">{_a(field.label)}</label>'
            f'<input id="{_a(input_id)}" name="mauticform[{_a(field.name)}]" value="" '
            f'class="mauticform-input" type="{input_type}">'
            f'<span class="mauticform-errormsg" style="display: none;">{REQUIRED_MESSAGE}</span>'
            "</div>"
        )
    submit = len(form.fields) + 1
    rows.append(
        f'<div id="mauticform_{_a(alias)}_submit" '
        f'class="mauticform-row mauticform-button-wrapper mauticform-field-{submit}">'
        f'<button type="submit" name="mauticform[submit]" id="mauticform_input_{_a(alias)}_submit" '
        'value="" class="mauticform-button btn btn-default">Submit</button></div>'
    )
    action = f"{server}/form/submit?formId={form.id}"
    return (
        f'<div id="mauticform_wrapper_{_a(alias)}" class="mauticform_wrapper">'
        f'<form autocomplete="false" role="form" method="post" action="{_a(action)}" '
        f'id="mauticform_{_a(alias)}" data-mautic-form="{_a(alias)}" enctype="multipart/form-data">'
        f'<div class="mauticform-error" id="mauticform_{_a(alias)}_error"></div>'
        f'<div class="mauticform-message" id="mauticform_{_a(alias)}_message"></div>'
        '<div class="mauticform-innerform">'
        '<div class="mauticform-page-wrapper mauticform-page-1" data-mautic-form-page="1">'
        + "".join(rows)
        + "</div></div>"
        f'<input type="hidden" name="mauticform[formId]" id="mauticform_{_a(alias)}_id" value="{form.id}">'
        f'<input type="hidden" name="mauticform[return]" id="mauticform_{_a(alias)}_return" value="">'
        f'<input type="hidden" name="mauticform[formName]" id="mauticform_{_a(alias)}_name" '
        f'value="{_a(alias)}">'
        "</form></div>"
    )


def form_script_tag(server: str) -> str:
    """What the manual copy puts before the form: the form script (mtc_js/mautic-form.js)."""
    return f'<script src="{_a(server)}/media/js/mautic-form.js" defer></script>'
