"""``POST /v1/evaluate`` (read scope): off-policy evaluation of a candidate policy on a
logged-bandit file sent in the body — rounds another system logged, not the engine's own
decision log (that is ``/v1/placements/{key}/evaluate``). The same as ``kairos evaluate --log
FILE`` (``decisions.offline``): the file's CSV text in ``log``, in the format of
``decisions.logfile``; the answer holds IPS, SNIPS and DR with their intervals and relative
values. A file over the body limit (``[limits] max_body_kb``, 2 MB by default) needs that
raised, or the CLI.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collector.errors import with_path
from decisions.logfile import LogFileError, read_log
from decisions.offline import Prior, evaluate_log
from edge.api.auth import needs
from edge.api.responses import error, json

__all__ = ["LogEvaluation", "routes"]


class LogEvaluation(msgspec.Struct, forbid_unknown_fields=True):
    """What ``POST /v1/evaluate`` takes: the logged rounds (CSV text) and the candidate."""

    log: Annotated[str, msgspec.Meta(min_length=1)]
    policy: Literal["thompson"] = "thompson"
    prior: Prior | None = None
    draws: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 100_000
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)] = 7
    train_share: Annotated[float, msgspec.Meta(ge=0.0, lt=1.0)] = 0.0


_ASK = msgspec.json.Decoder(LogEvaluation)


@needs("read")
async def evaluate(request: Request) -> Response:
    try:
        ask = _ASK.decode(await request.body())
    except msgspec.ValidationError as exc:
        return error(400, "invalid_request", with_path(str(exc), of=LogEvaluation))
    except msgspec.DecodeError as exc:
        return error(400, "invalid_json", f"$: {exc}")
    try:
        rounds = await run_in_threadpool(read_log, ask.log)
    except LogFileError as exc:
        return error(400, "invalid_log", f"$.log: {exc}")
    try:
        found = await run_in_threadpool(
            evaluate_log, rounds, ask.policy, ask.prior, ask.draws, ask.seed, ask.train_share
        )
    except ValueError as exc:  # the prior and the log disagree on the arms, …
        return error(400, "invalid_request", f"$.prior: {exc}")
    return json(found)


routes = [Route("/v1/evaluate", evaluate, methods=["POST"])]
