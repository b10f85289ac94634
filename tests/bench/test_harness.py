"""What every benchmark's verdict rests on: wrk's report read right (its non-2xx answers and
socket errors counted), and a run that fails as soon as a phase had an error or logged fewer
decisions than it answered."""

from __future__ import annotations

import pytest

from bench.harness import Load, Verdict, parse_wrk

# A real wrk 4.1 report of /v1/decide against an engine with [limits] per_key = 20.
LIMITED = """\
Running 1s test @ http://127.0.0.1:18005
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.94ms    2.50ms  32.33ms   87.56%
    Req/Sec    11.51k     2.02k   16.49k    90.00%
  Latency Distribution
     50%    2.14ms
     75%    3.97ms
     90%    5.64ms
     99%   10.47ms
  11491 requests in 1.01s, 3.15MB read
  Non-2xx or 3xx responses: 11432
Requests/sec:  11387.36
Transfer/sec:      3.12MB
"""

# The same shape with the line wrk adds when connections fail (src/wrk.c).
BROKEN = """\
Running 10s test @ http://127.0.0.1:8000
  1 threads and 32 connections
  Latency Distribution
     50%    1.50ms
     90%    2.00ms
     99%    3.25ms
  80000 requests in 10.00s, 30.00MB read
  Socket errors: connect 0, read 3, write 1, timeout 2
Requests/sec:   8000.00
Transfer/sec:      3.00MB
"""


def test_wrk_reports_are_read_with_their_errors() -> None:
    limited = parse_wrk(LIMITED)
    assert (limited.requests, limited.non2xx, limited.socket_errors) == (11491, 11432, 0)
    assert (limited.rps, limited.seconds, limited.ok) == (11387.36, 1.01, 59)
    assert (limited.p50, limited.p90, limited.p99) == ("2.14ms", "5.64ms", "10.47ms")
    broken = parse_wrk(BROKEN)
    assert (broken.requests, broken.non2xx, broken.socket_errors, broken.errors) == (80000, 0, 6, 6)


def test_what_is_not_a_wrk_report_is_refused() -> None:
    with pytest.raises(ValueError, match="not a wrk report"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def _load(requests: int, non2xx: int = 0, sockets: int = 0) -> Load:
    return Load(requests, 10.0, requests / 10, "1ms", "2ms", "3ms", non2xx, sockets)


def test_a_phase_with_non_2xx_answers_fails_the_run_and_loses_its_ratio(
    capsys: pytest.CaptureFixture[str],
) -> None:
    verdict = Verdict()
    verdict.load("bare", _load(200_000))
    verdict.load("kairos", _load(80_000, non2xx=12))
    assert verdict.ratio(8_000, 20_000, "kairos", "bare") == "–"
    assert verdict.errors("kairos") == "12"
    assert verdict.exit_code() == 1
    assert capsys.readouterr().out == "FAILED: phase kairos had 12 non-2xx answers of 80,000\n"
    assert verdict.lines()[0].startswith("**FAILED**: phase kairos had 12 non-2xx answers")


def test_socket_errors_fail_a_phase_too() -> None:
    verdict = Verdict()
    verdict.load("ingest", _load(5_000, non2xx=1, sockets=2))
    assert verdict.failures() == [
        "phase ingest had 3 non-2xx answers or socket errors (1 non-2xx) of 5,000"
    ]


def test_fewer_decisions_logged_than_answered_fails(capsys: pytest.CaptureFixture[str]) -> None:
    verdict = Verdict()
    verdict.load("kairos", _load(1_000))
    verdict.decisions("kairos", 1_000, 999)
    assert verdict.exit_code() == 1
    assert capsys.readouterr().out == (
        "FAILED: phase kairos logged 999 decisions for 1,000 decisions answered with 200\n"
    )


def test_clean_phases_pass_with_their_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    verdict = Verdict()
    verdict.load("bare", _load(200_000))
    verdict.load("kairos", _load(110_000))
    verdict.decisions("kairos", 110_000, 110_004)  # answers wrk did not wait for count too
    assert verdict.ratio(11_000, 20_000, "kairos", "bare") == "0.55"
    assert verdict.exit_code() == 0
    assert capsys.readouterr().out == ""
    assert verdict.lines() == [
        "**PASS**: no phase had a non-2xx answer (310,000 answers in all); every decision "
        "answered was logged."
    ]
