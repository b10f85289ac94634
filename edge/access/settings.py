"""The config file's ``[access]`` section: whether the secret key still signs in to the
dashboard (the break-glass admin)."""

from __future__ import annotations

import msgspec

__all__ = ["AccessSettings"]


class AccessSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[access]``::

        [access]
        secret_key_sign_in = false   # the dashboard takes users' email and password only

    On by default: a fresh install has no users, and its first sign-in is with the secret key.
    Once an admin user exists (``kairos users add``), switch it off in production; the secret
    key's sessions then end at their next request. The secret key keeps its API powers.

    Examples:
        >>> AccessSettings().secret_key_sign_in
        True
    """

    secret_key_sign_in: bool = True
