"""Identifiers we hand out: random, so that a cookie value cannot be guessed from another."""

from __future__ import annotations

import secrets
import string

_TRACKING_ALPHABET = string.digits + string.ascii_lowercase
_TRACKING_LENGTH = 23
_TRACKING_VALUES = len(_TRACKING_ALPHABET) ** _TRACKING_LENGTH  # ~2**119


def new_contact_id() -> str:
    """24 hex characters (96 random bits); the value of the `mtc_id` cookie."""
    return secrets.token_hex(12)


def new_tracking_id() -> str:
    """23 characters of [0-9a-z], like Mautic's device tracking ids (`mautic_device_id`)."""
    # One draw from the OS (not one per character), written in base 36: uniform as before.
    number = secrets.randbelow(_TRACKING_VALUES)
    digits = []
    for _ in range(_TRACKING_LENGTH):
        number, digit = divmod(number, 36)
        digits.append(_TRACKING_ALPHABET[digit])
    return "".join(digits)
