"""Rules: when an activity matches, change the contact's points, add or remove tags, fire a named
trigger. Validated when saved (`validate_rule`, pure), matched against stream events
(`Rule.matches`, pure) and applied by `RuleEngine.fire`, off the request path (the stream
consumer, `contact_monitor.core.automation`). docs/automation.md.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import functools
import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bson import ObjectId
from pymongo.errors import BulkWriteError, DuplicateKeyError

from contact_monitor.core.activity import Activity, ActivityRecorder, now_ms
from contact_monitor.core.errors import BadUserInput
from contact_monitor.core.identity import in_transaction
from contact_monitor.core.tags import MAX_TAG_LENGTH, clean_tag, tag_key
from contact_monitor.storage import Storage
from contact_monitor.storage.documents import Document, Session

log = logging.getLogger(__name__)

Frequency = Literal["every_time", "once", "once_per_period"]
FREQUENCIES: tuple[Frequency, ...] = ("every_time", "once", "once_per_period")
# What a rule can be about. `utm_recorded` is a page hit carrying UTM codes (the stream has no
# event of its own for it); `tags_changed` with a `tag` condition means "this tag was added".
RULE_TYPES = (
    "page_hit",
    "utm_recorded",
    "form_submitted",
    "custom_activity",
    "tags_changed",
    "contact_identified",
)
# The conditions each kind accepts (anything else is refused when the rule is saved).
CONDITIONS: dict[str, frozenset[str]] = {
    "page_hit": frozenset({"url_matches", "utm_source", "utm_medium", "utm_campaign"}),
    "utm_recorded": frozenset({"url_matches", "utm_source", "utm_medium", "utm_campaign"}),
    "form_submitted": frozenset({"form_id"}),
    "custom_activity": frozenset({"custom_type"}),
    "tags_changed": frozenset({"tag"}),
    "contact_identified": frozenset(),
}
MAX_RULES = 500
MAX_NAME = 100
MAX_PATTERN = 256  # with MAX_WILDCARDS: under a millisecond against a 4,096-character URL
MAX_WILDCARDS = 8
MAX_UTM_VALUE = 200
MAX_TAG_ACTIONS = 20
MAX_POINTS = 1_000_000
MAX_PERIOD_SECONDS = 366 * 24 * 3600
# Trigger names and custom activity types: 1-64 letters, digits or _ . : - starting with a letter.
TRIGGER = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")
NEVER = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Rules read from MongoDB are used this long before they are read again: a rule changed through
# another process applies within this time (at once in the process that changed it).
RULES_CACHE_SECONDS = 1.0
MAX_REMEMBERED_GATES = 100_000
DUPLICATE_KEY = 11000


@functools.lru_cache(maxsize=1024)
def glob_pattern(pattern: str) -> re.Pattern[str]:
    """`*` any text, `?` one character, nothing else special; case-insensitive, whole string.
    fnmatch's translation (no backtracking blow-up on repeated `*`), with `[` taken literally."""
    return re.compile(fnmatch.translate(pattern.casefold().replace("[", "[[]")), re.DOTALL)


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    on: str
    conditions: Mapping[str, Any]
    actions: Mapping[str, Any]
    frequency: Frequency = "every_time"
    period_seconds: int | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    _url: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, doc: Document) -> Rule:
        conditions = dict(doc.get("conditions") or {})
        pattern = conditions.get("url_matches")
        return cls(
            id=str(doc["_id"]),
            name=doc["name"],
            on=doc["on"],
            conditions=conditions,
            actions=dict(doc.get("actions") or {}),
            frequency=doc.get("frequency", "every_time"),
            period_seconds=doc.get("period_seconds"),
            created_at=doc.get("created_at"),
            updated_at=doc.get("updated_at"),
            _url=glob_pattern(pattern) if pattern else None,
        )

    def matches(self, event: Mapping[str, Any], url: str | None = None) -> bool:
        """Whether the stream event is one this rule is about (pure). `url`: the page hit's URL
        case-folded, when the caller folded it once for all the rules."""
        kind = event.get("type")
        if self.on == "utm_recorded":
            if kind != "page_hit" or not ((event.get("hit") or {}).get("utm")):
                return False
        elif kind != self.on:
            return False
        c = self.conditions
        data: Mapping[str, Any] = event
        if kind == "page_hit":
            hit = event.get("hit") or {}
            if self._url is not None:
                if url is None:
                    url = str(hit.get("url") or "").casefold()
                if not self._url.fullmatch(url):
                    return False
            utm = hit.get("utm") or {}
            for name in ("utm_source", "utm_medium", "utm_campaign"):
                if name in c and str(utm.get(name, "")).casefold() != str(c[name]).casefold():
                    return False
        elif kind == "form_submitted":
            if "form_id" in c and data.get("form_id") != c["form_id"]:
                return False
        elif kind == "custom_activity":
            if "custom_type" in c and data.get("activity_type") != c["custom_type"]:
                return False
        elif kind == "tags_changed" and "tag" in c:
            wanted = tag_key(c["tag"])
            if not any(tag_key(str(tag)) == wanted for tag in data.get("added") or []):
                return False
        return True

    def reopens(self, at: dt.datetime) -> dt.datetime | None:
        """When the rule may fire again for a contact it fires for at `at` (None: every time)."""
        if self.frequency == "once":
            return NEVER
        if self.frequency == "once_per_period":
            try:
                return min(at + dt.timedelta(seconds=self.period_seconds or 0), NEVER)
            except OverflowError:
                return NEVER
        return None


def validate_rule(
    *,
    name: str,
    on: str,
    url_matches: str | None = None,
    form_id: int | None = None,
    custom_type: str | None = None,
    tag: str | None = None,
    utm_source: str | None = None,
    utm_medium: str | None = None,
    utm_campaign: str | None = None,
    points: int | None = None,
    add_tags: Sequence[str] | None = None,
    remove_tags: Sequence[str] | None = None,
    trigger: str | None = None,
    frequency: str | None = None,
    period_seconds: int | None = None,
) -> Document:
    """The stored form of a rule (without ids and times), or `BadUserInput` saying what is wrong.
    Every condition is bounded: no regular expressions, patterns of at most MAX_PATTERN
    characters with at most MAX_WILDCARDS wildcards."""
    name = (name or "").strip()
    if not 1 <= len(name) <= MAX_NAME:
        raise BadUserInput(f"name must be 1 to {MAX_NAME} characters")
    if on not in RULE_TYPES:
        raise BadUserInput(f"a rule can be on {', '.join(t.upper() for t in RULE_TYPES)}; not {on.upper()}")
    conditions: Document = {}
    if url_matches is not None:
        if not 1 <= len(url_matches) <= MAX_PATTERN:
            raise BadUserInput(f"urlMatches must be 1 to {MAX_PATTERN} characters")
        if url_matches.count("*") + url_matches.count("?") > MAX_WILDCARDS:
            raise BadUserInput(f"urlMatches may hold at most {MAX_WILDCARDS} wildcards (* and ?)")
        conditions["url_matches"] = url_matches
    if form_id is not None:
        if form_id < 1:
            raise BadUserInput("formId must be a positive form id")
        conditions["form_id"] = form_id
    if custom_type is not None:
        if not TRIGGER.match(custom_type):
            raise BadUserInput("customType must be 1-64 letters, digits or _ . : - and start with a letter")
        conditions["custom_type"] = custom_type
    if tag is not None:
        conditions["tag"] = _tag(tag, "tag")
    for key, value in (
        ("utm_source", utm_source),
        ("utm_medium", utm_medium),
        ("utm_campaign", utm_campaign),
    ):
        if value is not None:
            if not 1 <= len(value) <= MAX_UTM_VALUE:
                raise BadUserInput(f"{_camel(key)} must be 1 to {MAX_UTM_VALUE} characters")
            conditions[key] = value
    misplaced = sorted(set(conditions) - CONDITIONS[on])
    if misplaced:
        allowed = ", ".join(_camel(c) for c in sorted(CONDITIONS[on])) or "none"
        raise BadUserInput(
            f"{', '.join(_camel(c) for c in misplaced)} does not apply to {on.upper()} rules "
            f"(conditions of {on.upper()}: {allowed})"
        )

    actions: Document = {}
    if points:
        if not -MAX_POINTS <= points <= MAX_POINTS:
            raise BadUserInput(f"points must be between -{MAX_POINTS} and {MAX_POINTS}")
        actions["points"] = points
    for key, tags in (("add_tags", add_tags), ("remove_tags", remove_tags)):
        if tags:
            if len(tags) > MAX_TAG_ACTIONS:
                raise BadUserInput(f"{_camel(key)}: at most {MAX_TAG_ACTIONS} tags")
            actions[key] = list(dict.fromkeys(_tag(t, _camel(key)) for t in tags))
    if trigger is not None:
        if not TRIGGER.match(trigger):
            raise BadUserInput("trigger must be 1-64 letters, digits or _ . : - and start with a letter")
        actions["trigger"] = trigger
    if not actions:
        raise BadUserInput("a rule needs an action: points, addTags, removeTags or trigger")

    chosen = (frequency or "every_time").lower()
    if chosen not in FREQUENCIES:
        raise BadUserInput(f"frequency must be one of {', '.join(f.upper() for f in FREQUENCIES)}")
    if chosen == "once_per_period":
        if period_seconds is None or not 1 <= period_seconds <= MAX_PERIOD_SECONDS:
            raise BadUserInput(f"ONCE_PER_PERIOD needs periodSeconds between 1 and {MAX_PERIOD_SECONDS}")
    elif period_seconds is not None:
        raise BadUserInput("periodSeconds applies to ONCE_PER_PERIOD rules only")
    return {
        "name": name,
        "on": on,
        "conditions": conditions,
        "actions": actions,
        "frequency": chosen,
        "period_seconds": period_seconds if chosen == "once_per_period" else None,
    }


def _tag(raw: str, what: str) -> str:
    name = clean_tag(raw)
    if not 1 <= len(name) <= MAX_TAG_LENGTH:
        raise BadUserInput(f"{what}: a tag is 1 to {MAX_TAG_LENGTH} characters (after cleaning)")
    return name


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


async def create_rule(storage: Storage, spec: Document) -> Rule:
    if await storage.rules.count() >= MAX_RULES:
        raise BadUserInput(f"at most {MAX_RULES} rules; delete one first")
    now = now_ms()
    return Rule.of(await storage.rules.insert({**spec, "created_at": now, "updated_at": now}))


@dataclass
class Candidate:
    """A rule that matched an event, before its frequency and the record of earlier firings
    decide whether it fires."""

    rule: Rule
    event: Mapping[str, Any]
    occurred: dt.datetime
    reopens: dt.datetime | None

    @property
    def gate(self) -> tuple[str, str]:
        return self.rule.id, str(self.event["contact_id"])

    def entry_id(self, kind: str) -> ObjectId:
        """The id of the timeline entry of this firing of this kind: derived from the rule and
        the activity, so that a second evaluation of the same activity finds it (idempotence
        without a record of its own), with the activity's time first (ObjectId order)."""
        digest = hashlib.sha256(f"{self.rule.id}:{self.event['activity_id']}:{kind}".encode()).digest()
        seconds = min(max(int(self.occurred.timestamp()), 0), 2**32 - 1)  # ObjectId's 4 bytes
        return ObjectId(seconds.to_bytes(4, "big") + digest[:8])


@dataclass
class Outcome:
    """What a batch of firings did: per contact, the timeline entries to publish and the contact
    after them; and the gates it closed."""

    activities: dict[str, list[Activity]] = field(default_factory=dict)
    documents: dict[str, list[Document]] = field(default_factory=dict)
    contacts: dict[str, Document] = field(default_factory=dict)
    changed: list[Document] = field(default_factory=list)  # the contacts written, as written
    gates: dict[tuple[str, str], dt.datetime] = field(default_factory=dict)
    fired: int = 0


class RuleEngine:
    """Matches stream events against the rules and applies the actions of those that fire, once
    per (rule, activity) and within each rule's frequency. The firings of a batch of events are
    written in one transaction; when that fails (another process fired one of them, a gate moved)
    each is tried in a transaction of its own."""

    def __init__(self, storage: Storage, recorder: ActivityRecorder) -> None:
        self.storage = storage
        self.recorder = recorder
        self._by_kind: dict[str, list[Rule]] = {}
        self._read_at: float | None = None
        # (rule id, contact id) -> when the rule's gate for the contact opens again, as this
        # process last saw it: a gated rule that matches every hit costs no write while closed.
        self._closed: OrderedDict[tuple[str, str], dt.datetime] = OrderedDict()
        self.fired = 0  # firings of this process (a metric)

    def forget(self) -> None:
        """Read the rules again before the next event (a rule changed in this process)."""
        self._read_at = None

    async def rules(self, clock: float, kind: str) -> list[Rule]:
        """The rules that can match an event of this kind."""
        if self._read_at is None or clock - self._read_at >= RULES_CACHE_SECONDS:
            by_kind: dict[str, list[Rule]] = {}
            for doc in await self.storage.rules.all():
                rule = Rule.of(doc)
                by_kind.setdefault("page_hit" if rule.on == "utm_recorded" else rule.on, []).append(rule)
            self._by_kind = by_kind
            self._read_at = clock
        return self._by_kind.get(kind, [])

    async def evaluate(self, event: Mapping[str, Any], clock: float) -> int:
        """`evaluate_batch` of one event."""
        return await self.evaluate_batch([event], clock)

    async def evaluate_batch(self, events: Sequence[Mapping[str, Any]], clock: float) -> int:
        """Apply every rule the events match, in their order; returns how many fired. Events that
        rules caused themselves (they carry `rule_id`) are not evaluated: rules cannot loop."""
        candidates: list[Candidate] = []
        for event in events:
            if "rule_id" in event or not event.get("contact_id") or not event.get("activity_id"):
                continue
            kind = str(event.get("type"))
            url = str((event.get("hit") or {}).get("url") or "").casefold() if kind == "page_hit" else None
            for rule in await self.rules(clock, kind):
                if not rule.matches(event, url):
                    continue
                # The activity's own time (a fixed one without it: the entry ids must not change).
                occurred = _time(event.get("occurred_at")) or EPOCH
                candidate = Candidate(rule, event, occurred, rule.reopens(occurred))
                # Closed as far as this process knows (a gate never opens early): no write.
                if candidate.reopens is None or occurred >= self._closed.get(candidate.gate, occurred):
                    candidates.append(candidate)
        if not candidates:
            return 0
        try:
            return await self._fire(candidates)
        except DuplicateKeyError:  # one at a time: each fires or not on its own
            return sum([await self._fire_alone(candidate) for candidate in candidates])

    async def _fire_alone(self, candidate: Candidate) -> int:
        try:
            return await self._fire([candidate])
        except DuplicateKeyError:  # fired by another process meanwhile, or its gate closed
            return 0

    async def _fire(self, candidates: list[Candidate]) -> int:
        await self._ensure_tags(candidates)
        # This process's cached copies now: kept after the commit only if nothing replaced them.
        held = self.storage.contacts.cached_now({str(c.event["contact_id"]) for c in candidates})
        try:
            outcome = await in_transaction(self.storage, lambda session: self._apply(candidates, session))
        except BaseException:
            # Without transactions part of it may be written (or a commit's outcome is unknown):
            # no process keeps these contacts as they were.
            await self.storage.contacts.changed(*{str(c.event["contact_id"]) for c in candidates})
            raise
        for gate, opens in outcome.gates.items():
            self._remember(gate, opens)
        await self.storage.contacts.committed(outcome.changed, held)
        documents = [doc for docs in outcome.documents.values() for doc in docs]
        if documents and self.recorder.after_write is not None:
            try:  # entries under a contact merged away meanwhile move to its survivor
                await self.recorder.after_write(documents)
            except Exception:
                log.warning("after-write step of rule entries failed", exc_info=True)
        self.recorder.publisher.waiting.set()  # the republisher appends them to the stream now
        self.fired += outcome.fired
        return outcome.fired

    async def _ensure_tags(self, candidates: list[Candidate]) -> None:
        """Tags the firings may add exist in the registry (its display names)."""
        names = {tag_key(name): name for c in candidates for name in c.rule.actions.get("add_tags", [])}
        if names:
            await self.storage.tags.ensure(names, now_ms())

    async def _apply(self, candidates: list[Candidate], session: Session) -> Outcome:
        """Decide in order which candidates fire (gate open), then write their effects:
        `DuplicateKeyError` when one fired before (its timeline entry exists: the ids are derived
        from the rule and the activity) or another process closed a gate first; then nothing of
        the transaction stays."""
        storage = self.storage
        outcome = Outcome()
        ids = {str(c.event["contact_id"]) for c in candidates}
        contacts = await storage.contacts.many(ids, session=session)
        for contact_id in ids - set(contacts):  # merged away since: its survivor
            survivor = await storage.contacts.resolve(contact_id)
            if survivor is not None:
                contacts[contact_id] = (
                    await storage.contacts.get(survivor["_id"], session=session) or survivor
                )
        gated = [c for c in candidates if c.reopens is not None and str(c.event["contact_id"]) in contacts]
        gates = await storage.rules.gates_of(
            [(c.rule.id, contacts[str(c.event["contact_id"])]["_id"]) for c in gated], session=session
        )
        # The registry's display names of every tag the firings may add or remove (one read).
        keys = {
            tag_key(name)
            for c in candidates
            for name in (*c.rule.actions.get("add_tags", []), *c.rule.actions.get("remove_tags", []))
        }
        registry = await storage.tags.names(keys) if keys else {}

        state: dict[str, Document] = {}  # contact _id -> the contact as the firings leave it
        passed: dict[tuple[str, str], tuple[dt.datetime, dt.datetime]] = {}  # gate -> (first at, opens)
        for c in candidates:
            contact = contacts.get(str(c.event["contact_id"]))
            if contact is None:
                continue
            cid = contact["_id"]
            key = (c.rule.id, cid)
            if c.reopens is not None:
                opens = passed[key][1] if key in passed else gates.get(key)
                if opens is not None and c.occurred < opens:
                    outcome.gates[c.gate] = opens
                    continue
                passed[key] = (passed[key][0] if key in passed else c.occurred, c.reopens)
                outcome.gates[c.gate] = c.reopens
            current = state.setdefault(cid, {**contact, "tags": list(contact.get("tags", []))})
            self._effects(c, current, registry, outcome)
            outcome.fired += 1

        # The entries first: their ids say whether a firing happened before (then nothing of it
        # is applied, also on a deployment without transactions).
        documents = [doc for docs in outcome.documents.values() for doc in docs]
        try:
            await storage.activities.insert_many(documents, session=session)
        except BulkWriteError as exc:  # an entry of this firing exists: it fired before
            if all(e.get("code") == DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise DuplicateKeyError("a firing of this batch was recorded before") from exc
            raise
        for key, (first, opens) in passed.items():
            await storage.rules.pass_gate(*key, first, opens, session=session)
        now = now_ms()
        found = {doc["_id"]: doc for doc in contacts.values()}  # by their own id (survivors too)
        changes: list[tuple[str, int, list[str] | None]] = []
        for cid, after in state.items():
            before = found[cid]
            points = int(after.get("points", 0)) - int(before.get("points", 0))
            tags = after["tags"] if after["tags"] != before.get("tags", []) else None
            if points or tags is not None:
                after["updated_at"] = now  # as stored: `after` is the contact once committed
                changes.append((cid, points, tags))
                outcome.changed.append(after)
            outcome.contacts[cid] = after
        await storage.contacts.apply_rules(changes, now=now, session=session)
        # Their stream entries go through the outbox, in this transaction: a crash right after
        # the commit cannot lose them (a second evaluation would find the firing done).
        publisher = self.recorder.publisher
        await storage.outbox.add(
            publisher.stream_key,
            [
                (activity.to_json(outcome.contacts[cid]), [cid])
                for cid, activities in outcome.activities.items()
                for activity in activities
            ],
            session=session,
        )
        return outcome

    @staticmethod
    def _effects(c: Candidate, contact: Document, registry: Mapping[str, str], outcome: Outcome) -> None:
        """Apply one firing's actions to `contact` (in memory) and add its timeline entries."""
        actions = c.rule.actions
        cid = contact["_id"]
        cause = {
            "rule_id": c.rule.id,
            "rule_name": c.rule.name,
            "cause_activity_id": str(c.event["activity_id"]),
        }
        entries: list[Activity] = []
        if actions.get("points"):
            contact["points"] = int(contact.get("points", 0)) + int(actions["points"])
            data = {"delta": int(actions["points"]), "total": contact["points"], **cause}
            entries.append(
                Activity("points_changed", cid, c.occurred, data, id=str(c.entry_id("points_changed")))
            )
        held = contact["tags"]
        added = [
            registry.get(tag_key(n), n)
            for n in actions.get("add_tags", [])
            if registry.get(tag_key(n), n) not in held
        ]
        removed = [
            registry[tag_key(n)] for n in actions.get("remove_tags", []) if registry.get(tag_key(n)) in held
        ]
        if added or removed:
            contact["tags"] = [t for t in held if t not in removed] + added
            data = {"added": added, "removed": removed, **cause}
            entries.append(
                Activity("tags_changed", cid, c.occurred, data, id=str(c.entry_id("tags_changed")))
            )
        if actions.get("trigger"):
            data = {"trigger": actions["trigger"], **cause}
            entries.append(
                Activity("trigger_fired", cid, c.occurred, data, id=str(c.entry_id("trigger_fired")))
            )
        outcome.activities.setdefault(cid, []).extend(entries)
        outcome.documents.setdefault(cid, []).extend(ActivityRecorder.documents(entries))

    def _remember(self, gate: tuple[str, str], opens: dt.datetime) -> None:
        self._closed[gate] = opens
        self._closed.move_to_end(gate)
        while len(self._closed) > MAX_REMEMBERED_GATES:
            self._closed.popitem(last=False)


def _time(raw: object) -> dt.datetime | None:
    if not isinstance(raw, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)
