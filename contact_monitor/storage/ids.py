"""Identifiers we hand out: random, so that a cookie value cannot be guessed from another."""

from __future__ import annotations

import secrets
import string

_TRACKING_ALPHABET = string.digits + string.ascii_lowercase


def new_contact_id() -> str:
    """24 hex characters (96 random bits); the value of the `mtc_id` cookie."""
    return secrets.token_hex(12)


def new_tracking_id() -> str:
    """23 characters of [0-9a-z], like Mautic's device tracking ids (`mautic_device_id`)."""
    return "".join(secrets.choice(_TRACKING_ALPHABET) for _ in range(23))
