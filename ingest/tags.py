"""Parse the `tags` parameter: `tags=ProductA,-ProductB` adds ProductA and removes ProductB (pure).

Cleaning follows Mautic's XSS behaviour (entities decoded, anything that looks like markup
stripped); unlike Mautic, whitespace after a leading `-` is trimmed and names are matched
case-insensitively through `tag_key`.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

MAX_TAGS_PER_REQUEST = 64
MAX_TAG_LENGTH = 100

# `<` up to the next `>` or to the end of the text, as Mautic's InputHelper::clean does.
_MARKUP = re.compile(r"<[^>]*(?:>|$)")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class TagChanges:
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.add or self.remove)


def tag_key(name: str) -> str:
    """Tags are the same tag whatever their case: the key is the case-folded name."""
    return name.casefold()


def clean_tag(raw: str) -> str:
    """Decode entities, strip markup and NUL bytes, collapse whitespace."""
    text = html.unescape(raw.replace("\x00", "").strip())
    text = _MARKUP.sub("", text).replace("\x00", "")
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
