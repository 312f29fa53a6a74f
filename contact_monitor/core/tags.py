"""Tags: cleaning, the case-insensitive key, the requested changes and the one diff against what a
contact holds, used by tracking requests, forms and the API alike.

`tags=ProductA,-ProductB` adds ProductA and removes ProductB. Cleaning follows Mautic's XSS
behaviour (entities decoded, anything that looks like markup stripped); unlike Mautic, whitespace
after a leading `-` is trimmed and names are matched case-insensitively through `tag_key`
(docs/identity.md, "Tags").
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Iterable
from dataclasses import dataclass

from contact_monitor.core.errors import BadUserInput
from contact_monitor.storage import Storage
from contact_monitor.text import strip_markup

MAX_TAGS_PER_REQUEST = 64
MAX_TAG_LENGTH = 100

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class TagChanges:
    """Cleaned names to add and to remove: never the same tag in both, no tag twice."""

    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.add or self.remove)

    @classmethod
    def requested(cls, add: Iterable[str] | None, remove: Iterable[str] | None) -> TagChanges:
        """Lists given by an API caller, cleaned; a tag in both lists is removed. `BadUserInput`
        past the limits (a caller's lists are refused whole; a tracking request's are cut)."""
        cleaned_add, cleaned_remove = _cleaned(add), _cleaned(remove)
        removing: dict[str, str] = {}
        for name in cleaned_remove:
            removing.setdefault(tag_key(name), name)
        adding: dict[str, str] = {}
        for name in cleaned_add:
            if tag_key(name) not in removing:
                adding.setdefault(tag_key(name), name)
        return cls(tuple(adding.values()), tuple(removing.values()))


def _cleaned(names: Iterable[str] | None) -> list[str]:
    cleaned = [name for name in (clean_tag(raw) for raw in names or []) if name]
    if len(cleaned) > MAX_TAGS_PER_REQUEST:
        raise BadUserInput(f"at most {MAX_TAGS_PER_REQUEST} tags at once")
    if any(len(name) > MAX_TAG_LENGTH for name in cleaned):
        raise BadUserInput(f"tags are at most {MAX_TAG_LENGTH} characters")
    return cleaned


async def diff(
    storage: Storage, held: Iterable[str], changes: TagChanges, now: dt.datetime
) -> tuple[list[str], list[str]]:
    """(added, removed) display names: what `changes` really changes on a contact holding `held`.
    Tags to add are created when new (an existing tag keeps its first spelling)."""
    names = (
        await storage.tags.ensure({tag_key(name): name for name in changes.add}, now) if changes.add else {}
    )
    if changes.remove:
        names.update(await storage.tags.names(tag_key(name) for name in changes.remove))
    holding = set(held)
    added = [names[tag_key(name)] for name in changes.add if names.get(tag_key(name)) not in holding]
    removed = [names[k] for name in changes.remove if (k := tag_key(name)) in names and names[k] in holding]
    return added, removed


def tag_key(name: str) -> str:
    """Tags are the same tag whatever their case: the key is the case-folded name."""
    return name.casefold()


def clean_tag(raw: str) -> str:
    """Decode entities, strip markup and NUL bytes, collapse whitespace."""
    text = html.unescape(raw.replace("\x00", "").strip())
    text = strip_markup(text).replace("\x00", "")
    return _SPACE.sub(" ", text).strip()


def parse_tags(value: str | list[str]) -> TagChanges:
    """Split on commas (or take a list as is), clean, and sort into additions and removals."""
    items = value if isinstance(value, list) else value.split(",")
    warnings: list[str] = []
    add: dict[str, str] = {}
    remove: dict[str, str] = {}
    accepted = 0
    for item in items:
        stripped = item.strip()
        negative = stripped.startswith("-")
        name = clean_tag(stripped[1:] if negative else stripped)
        if not name:
            continue
        if len(name) > MAX_TAG_LENGTH:
            warnings.append(f"tag longer than {MAX_TAG_LENGTH} characters ignored: {name[:20]!r}...")
            continue
        if accepted >= MAX_TAGS_PER_REQUEST:
            warnings.append(f"more than {MAX_TAGS_PER_REQUEST} tags in one request: the rest were ignored")
            break
        accepted += 1
        key = tag_key(name)
        if negative:
            add.pop(key, None)
            remove.setdefault(key, name)
        else:
            remove.pop(key, None)
            add.setdefault(key, name)
    return TagChanges(tuple(add.values()), tuple(remove.values()), tuple(dict.fromkeys(warnings)))
