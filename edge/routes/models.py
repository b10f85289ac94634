"""``GET /v1/models`` (secret key): the learner's models and how well they predict.

Per model: its target and estimator, labelled examples so far, and over the last ``window``
examples the prequential ROC AUC, log loss and calibration by decile (each prediction made
before its label was known). Also the last lifetime-value fit (its parameters, customers and
time). The learner publishes this every few seconds (``profiles.learner``); before it has,
``models`` is empty.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edge.api.auth import needs
from edge.api.responses import json
from profiles.learner import SUMMARY
from profiles.valuation import LTV

__all__ = ["models_summary", "routes"]


async def models_summary(request: Request) -> dict[str, Any]:
    summary, fit = await request.state.redis.mget(SUMMARY, LTV)
    found: dict[str, Any] = msgspec.json.decode(summary) if summary else {"models": []}
    found["ltv"] = msgspec.json.decode(fit) if fit else None
    return found


@needs("read")
async def list_models(request: Request) -> Response:
    return json(await models_summary(request))


routes = [Route("/v1/models", list_models)]
