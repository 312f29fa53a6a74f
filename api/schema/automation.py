"""Rules and webhooks in GraphQL: their types, inputs and the resolvers that Query and Mutation
mount (docs/automation.md)."""

from __future__ import annotations

import datetime as dt
from enum import Enum

import strawberry

from api.schema.inputs import ActivityType
from api.schema.types import Info
from contact_monitor.core import rules as rule_ops
from contact_monitor.core import webhooks as webhook_ops
from contact_monitor.core.activity import now_ms
from contact_monitor.core.errors import NotFound
from contact_monitor.core.rules import Rule as RuleModel
from contact_monitor.storage.documents import Document
from resolvers.pagination import page_size


@strawberry.enum(description="How often a rule may fire for one contact.")
class RuleFrequency(Enum):
    EVERY_TIME = "every_time"
    ONCE = "once"
    ONCE_PER_PERIOD = "once_per_period"


@strawberry.input(
    description="A rule: `on` an activity kind, every given condition must hold; at least one action. "
    "urlMatches: the page URL or app screen name, case-insensitive, `*` any text and `?` one "
    "character (no other pattern syntax): `cart_screen` exact, `https://shop.example.com/*` prefix."
)
class RuleInput:
    name: str
    on: ActivityType
    url_matches: str | None = None
    form_id: int | None = None
    custom_type: str | None = strawberry.field(default=None, description="CUSTOM_ACTIVITY: its type.")
    tag: str | None = strawberry.field(default=None, description="TAGS_CHANGED: this tag was added.")
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    points: int | None = None
    add_tags: list[str] | None = None
    remove_tags: list[str] | None = None
    trigger: str | None = strawberry.field(
        default=None, description="Fire this named trigger (TRIGGER_FIRED on the timeline and stream)."
    )
    frequency: RuleFrequency | None = strawberry.field(default=None, description="EVERY_TIME when omitted.")
    period_seconds: int | None = strawberry.field(default=None, description="For ONCE_PER_PERIOD.")


@strawberry.type(description="A rule (createRule).")
class Rule:
    model: strawberry.Private[RuleModel]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(self.model.id)

    @strawberry.field
    def name(self) -> str:
        return self.model.name

    @strawberry.field
    def on(self) -> ActivityType:
        return ActivityType(self.model.on)

    @strawberry.field
    def url_matches(self) -> str | None:
        return self.model.conditions.get("url_matches")

    @strawberry.field
    def form_id(self) -> int | None:
        return self.model.conditions.get("form_id")

    @strawberry.field
    def custom_type(self) -> str | None:
        return self.model.conditions.get("custom_type")

    @strawberry.field
    def tag(self) -> str | None:
        return self.model.conditions.get("tag")

    @strawberry.field
    def utm_source(self) -> str | None:
        return self.model.conditions.get("utm_source")

    @strawberry.field
    def utm_medium(self) -> str | None:
        return self.model.conditions.get("utm_medium")

    @strawberry.field
    def utm_campaign(self) -> str | None:
        return self.model.conditions.get("utm_campaign")

    @strawberry.field
    def points(self) -> int:
        return int(self.model.actions.get("points", 0))

    @strawberry.field
    def add_tags(self) -> list[str]:
        return list(self.model.actions.get("add_tags", []))

    @strawberry.field
    def remove_tags(self) -> list[str]:
        return list(self.model.actions.get("remove_tags", []))

    @strawberry.field
    def trigger(self) -> str | None:
        return self.model.actions.get("trigger")

    @strawberry.field
    def frequency(self) -> RuleFrequency:
        return RuleFrequency(self.model.frequency)

    @strawberry.field
    def period_seconds(self) -> int | None:
        return self.model.period_seconds

    @strawberry.field
    def created_at(self) -> dt.datetime | None:
        return self.model.created_at

    @strawberry.field
    def updated_at(self) -> dt.datetime | None:
        return self.model.updated_at


@strawberry.input(
    description="A webhook: events of these types are POSTed to the URL, signed with the secret."
)
class WebhookInput:
    url: str
    types: list[ActivityType]
    secret: str = strawberry.field(
        description="16-256 characters; the receiver checks X-CM-Signature with it. Never shown again."
    )


@strawberry.type(description="A webhook (createWebhook). The secret is never returned.")
class Webhook:
    doc: strawberry.Private[Document]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.doc["_id"]))

    @strawberry.field
    def url(self) -> str:
        return str(self.doc["url"])

    @strawberry.field
    def types(self) -> list[ActivityType]:
        return [ActivityType(t) for t in self.doc.get("types", [])]

    @strawberry.field(description="false after too many consecutive failures (or by setWebhookEnabled).")
    def enabled(self) -> bool:
        return bool(self.doc.get("enabled"))

    @strawberry.field
    def consecutive_failures(self) -> int:
        return int(self.doc.get("consecutive_failures", 0))

    @strawberry.field(description="When failures disabled it; null otherwise.")
    def disabled_at(self) -> dt.datetime | None:
        return self.doc.get("disabled_at")

    @strawberry.field
    def created_at(self) -> dt.datetime:
        return self.doc["created_at"]  # type: ignore[no-any-return]


@strawberry.type(description="One attempt to deliver an event.")
class WebhookAttempt:
    at: dt.datetime
    status_code: int | None = strawberry.field(
        description="The receiver's HTTP status; null without an answer."
    )
    error: str | None = strawberry.field(description="Why it failed; null when it succeeded.")
    duration_ms: float


@strawberry.type(description="One event for one webhook, with every attempt.")
class WebhookDelivery:
    doc: strawberry.Private[Document]

    @strawberry.field(description="Sent as X-CM-Delivery on every attempt.")
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.doc["_id"]))

    @strawberry.field
    def activity_id(self) -> strawberry.ID:
        return strawberry.ID(str(self.doc.get("activity_id", "")))

    @strawberry.field
    def type(self) -> ActivityType:
        return ActivityType(self.doc.get("type"))

    @strawberry.field(description="pending (waiting for its next attempt), delivered or failed (gave up).")
    def status(self) -> str:
        return str(self.doc.get("status"))

    @strawberry.field
    def attempts(self) -> list[WebhookAttempt]:
        return [
            WebhookAttempt(
                at=a["at"],
                status_code=a.get("status_code"),
                error=a.get("error"),
                duration_ms=a["duration_ms"],
            )
            for a in self.doc.get("attempts", [])
        ]

    @strawberry.field
    def next_attempt_at(self) -> dt.datetime | None:
        return self.doc.get("next_attempt_at") if self.doc.get("status") == "pending" else None

    @strawberry.field
    def created_at(self) -> dt.datetime:
        return self.doc["created_at"]  # type: ignore[no-any-return]

    @strawberry.field
    def finished_at(self) -> dt.datetime | None:
        return self.doc.get("finished_at")

    @strawberry.field(description="The JSON body sent (the stream event).")
    def body(self) -> str:
        return str(self.doc.get("body", ""))


def _spec(input: RuleInput) -> Document:
    return rule_ops.validate_rule(
        name=input.name,
        on=input.on.value,
        url_matches=input.url_matches,
        form_id=input.form_id,
        custom_type=input.custom_type,
        tag=input.tag,
        utm_source=input.utm_source,
        utm_medium=input.utm_medium,
        utm_campaign=input.utm_campaign,
        points=input.points,
        add_tags=input.add_tags,
        remove_tags=input.remove_tags,
        trigger=input.trigger,
        frequency=input.frequency.value if input.frequency else None,
        period_seconds=input.period_seconds,
    )


async def rules(info: Info) -> list[Rule]:
    return [Rule(model=RuleModel.of(doc)) for doc in await info.context.services.storage.rules.all()]


async def create_rule(info: Info, input: RuleInput) -> Rule:
    services = info.context.services
    rule = await rule_ops.create_rule(services.storage, _spec(input))
    services.rules.forget()
    return Rule(model=rule)


async def update_rule(info: Info, id: strawberry.ID, input: RuleInput) -> Rule:
    services = info.context.services
    spec = _spec(input)
    doc = await services.storage.rules.replace(str(id), {**spec, "updated_at": now_ms()})
    if doc is None:
        raise NotFound(f"no rule {id}")
    services.rules.forget()
    return Rule(model=RuleModel.of(doc))


async def delete_rule(info: Info, id: strawberry.ID) -> bool:
    services = info.context.services
    deleted = await services.storage.rules.delete(str(id))
    services.rules.forget()
    return deleted


async def webhooks(info: Info) -> list[Webhook]:
    return [Webhook(doc=doc) for doc in await info.context.services.storage.webhooks.all()]


async def create_webhook(info: Info, input: WebhookInput) -> Webhook:
    services = info.context.services
    spec = webhook_ops.validate_webhook(
        input.url,
        [t.value for t in input.types],
        input.secret,
        allow_private=services.settings.webhook_allow_private,
    )
    doc = await webhook_ops.create_webhook(services.storage, spec)
    services.webhooks.forget()
    return Webhook(doc=doc)


async def set_webhook_enabled(info: Info, id: strawberry.ID, enabled: bool) -> Webhook:
    services = info.context.services
    doc = await services.storage.webhooks.set_enabled(str(id), enabled)
    if doc is None:
        raise NotFound(f"no webhook {id}")
    services.webhooks.forget()
    return Webhook(doc=doc)


async def delete_webhook(info: Info, id: strawberry.ID) -> bool:
    services = info.context.services
    deleted = await services.storage.webhooks.delete(str(id))
    services.webhooks.forget()
    return deleted


async def webhook_deliveries(
    info: Info, webhook_id: strawberry.ID, first: int | None = None
) -> list[WebhookDelivery]:
    storage = info.context.services.storage
    if await storage.webhooks.get(str(webhook_id)) is None:
        raise NotFound(f"no webhook {webhook_id}")
    docs = await storage.webhooks.for_webhook(str(webhook_id), page_size(first))
    return [WebhookDelivery(doc=doc) for doc in docs]
