"""Identifiers handed out in cookies: their form, and that they do not repeat."""

from __future__ import annotations

import re
from collections import Counter

from contact_monitor.storage.ids import new_contact_id, new_tracking_id


def test_tracking_ids_are_23_characters_of_digits_and_lower_case_letters_spread_evenly():
    ids = [new_tracking_id() for _ in range(5000)]
    assert all(re.fullmatch(r"[0-9a-z]{23}", value) for value in ids)
    assert len(set(ids)) == len(ids)
    counts = Counter("".join(ids))
    assert len(counts) == 36
    expected = 5000 * 23 / 36  # ~3,194 per character
    assert all(abs(count - expected) < expected * 0.15 for count in counts.values())
    # The last character too (the most significant digit of the draw): all 36 values occur.
    assert len({value[-1] for value in ids}) == 36


def test_contact_ids_are_24_hex_characters():
    ids = {new_contact_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(re.fullmatch(r"[0-9a-f]{24}", value) for value in ids)
