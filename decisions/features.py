"""Context features for contextual policies, from the decide request and the visitor's profile.

A placement lists the features it uses by name:

- ``bias``: 1;
- ``device:mobile``, ``device:tablet``, ``device:desktop``: 1 for the visitor's device
  (``context.device.type``, else the user agent);
- ``source:direct``, ``source:search``, ``source:social``, ``source:email``, ``source:paid``,
  ``source:referral``: 1 for where the visit came from (``context.campaign.medium``, else the
  referrer);
- ``segment:<key>``: 1 if the profile is in the segment;
- ``score:<name>``: the profile's predicted score (0 when unknown);
- ``trait:<name>=<value>``: 1 if the trait has that value;
- ``returning``: 1 after the first session;
- ``orders``, ``page_views``, ``sessions``: log(1 + the count).

Examples:
    >>> build(["bias", "device:mobile", "returning"], {"userAgent": "Mozilla/5.0 (iPhone; Mobile)"},
    ...       {"sessions": "3"}).tolist()
    [1.0, 1.0, 1.0]
"""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from profiles.visits import device, source

__all__ = ["build", "check_features"]

_NAME = re.compile(
    r"bias|returning|orders|page_views|sessions"
    r"|device:(mobile|tablet|desktop)"
    r"|source:(direct|search|social|email|paid|referral)"
    r"|segment:[a-z0-9_][a-z0-9_-]{0,63}|score:\w+|trait:\w+=.+"
)


def check_features(names: list[str]) -> None:
    if not names:
        raise ValueError("`policy.features` must list the features of a contextual policy")
    for name in names:
        if not _NAME.fullmatch(name):
            raise ValueError(f"`policy.features` has an unknown feature {name!r}")


def build(
    names: list[str], context: dict[str, Any], profile: dict[str, str]
) -> NDArray[np.float64]:
    """The feature vector for ``names``; ``profile`` is the profile hash (empty when unknown)."""
    segments = msgspec.json.decode(profile["segments"]) if "segments" in profile else []
    values = []
    for name in names:
        kind, _, arg = name.partition(":")
        if name == "bias":
            value = 1.0
        elif kind == "device":
            value = float(device(context) == arg)
        elif kind == "source":
            value = float(source(context) == arg)
        elif kind == "segment":
            value = float(arg in segments)
        elif kind == "score":
            value = float(profile.get(f"s:{arg}", 0.0))
        elif kind == "trait":
            trait, _, wanted = arg.partition("=")
            raw = profile.get(f"t:{trait}")
            value = float(raw is not None and str(msgspec.json.decode(raw)) == wanted)
        elif name == "returning":
            value = float(float(profile.get("sessions", 0)) > 1)
        else:  # orders, page_views, sessions
            value = math.log1p(float(profile.get(name, 0)))
        values.append(value)
    return np.asarray(values, dtype=np.float64)
