"""Pure text rules every layer shares: the one yes/no vocabulary and markup stripping."""

from __future__ import annotations

import re

# Words accepted for yes and no wherever a flag is read: settings, tracking parameters, boolean
# contact fields. Compared after strip() and lower().
TRUE_WORDS = frozenset({"1", "true", "yes", "on", "y", "t"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", "n", "f"})

# `<` up to the next `>` or to the end of the text, as Mautic's InputHelper::clean strips it.
_MARKUP = re.compile(r"<[^>]*(?:>|$)")


def parse_flag(text: str) -> bool | None:
    """True or False for a yes/no word, None for anything else."""
    lowered = text.strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    return None


def strip_markup(text: str) -> str:
    """The text without anything that looks like an HTML tag (values end up in dashboards)."""
    return _MARKUP.sub("", text)
