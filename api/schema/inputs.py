"""GraphQL inputs and enums."""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import TYPE_CHECKING

import strawberry

from contact_monitor.core.activity import ACTIVITY_TYPES, TIMELINE_TYPES


@strawberry.input(description="A field value to match exactly (after the field's type conversion).")
class FieldMatch:
    alias: str
    value: str


@strawberry.input(description="Every given condition must hold.")
class ContactFilter:
    email: str | None = strawberry.field(default=None, description="Exact email, case-insensitive.")
    tag: str | None = strawberry.field(default=None, description="Carries this tag (case-insensitive).")
    identified: bool | None = strawberry.field(
        default=None, description="true: identified contacts only; false: anonymous visitors only."
    )
    active_since: dt.datetime | None = strawberry.field(default=None, description="Last active at or after.")
    url_contains: str | None = strawberry.field(
        default=None, description="Visited a page whose URL contains this text (case-insensitive)."
    )
    utm_source: str | None = strawberry.field(default=None, description="Came with this utm_source.")
    utm_campaign: str | None = strawberry.field(default=None, description="Came with this utm_campaign.")
    field: FieldMatch | None = strawberry.field(default=None, description="A contact field has this value.")
    points_at_least: int | None = strawberry.field(
        default=None, description="Has at least this many points (rules and recordActivity give them)."
    )


@strawberry.input(description="A contact by id, or by email (created when the email is new).", one_of=True)
class ContactRef:
    id: strawberry.ID | None = strawberry.UNSET
    email: str | None = strawberry.UNSET


if TYPE_CHECKING:  # built at run time from the core's list; to mypy it is some Enum
    TimelineType = Enum
    ActivityType = Enum
else:
    # The activity kinds of the core; UTM_RECORDED (a page hit carrying UTM codes: filters and
    # rules); GAP and LAGGED, the markers of the live feed.
    ActivityType = strawberry.enum(
        Enum(
            "ActivityType",
            {kind.upper(): kind for kind in (*ACTIVITY_TYPES, "utm_recorded", "gap", "lagged")},
        ),
        description="Kinds of activity. UTM_RECORDED is a page hit carrying UTM codes; GAP and "
        "LAGGED are markers every live subscription gets.",
    )
    TimelineType = strawberry.enum(
        Enum("TimelineType", {kind.upper(): kind for kind in TIMELINE_TYPES}),
        description="Kinds of timeline entries.",
    )


@strawberry.input(description="A form field: its name in the posted data, and the contact field it fills.")
class FormFieldInput:
    name: str
    label: str | None = None
    contact_field: str | None = None
    required: bool = False


@strawberry.enum(description="The order of the contacts query.")
class ContactOrder(Enum):
    LAST_ACTIVE = "last_active"
    POINTS = "points"
