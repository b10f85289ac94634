"""Logged-bandit files: rounds some other system logged (an arm shown at a position, with the
probability it was shown with, and what it earned), for off-policy evaluation
(``decisions.offline``, ``kairos evaluate --log FILE``, ``POST /v1/evaluate``).

The format is CSV with a header row; it reads the Open Bandit Dataset's files as they are.

| column | also named | holds |
|---|---|---|
| ``action`` | ``item_id`` | the arm shown: an integer from 0 (below ``MAX_ARMS``) |
| ``reward`` | ``click`` | what it earned: a number |
| ``propensity`` | ``propensity_score`` | the probability it was shown with: in (0, 1] |
| ``position`` | | where in the list, 1 first (optional: 1) |
| ``timestamp`` | | ignored: rounds are taken in file order |

A column with an empty name (a pandas index) is ignored; every other column is context: a
number in every row makes a numeric feature, else a category (one 0/1 feature per value after
the first seen; at most ``MAX_LEVELS`` values). A missing cell is an error.

Examples:
    >>> rounds = read_log("action,position,reward,propensity,device\\n"
    ...                   "0,1,1,0.5,mobile\\n1,2,0,0.5,desktop\\n")
    >>> rounds.arms.tolist(), rounds.positions.tolist(), rounds.context_names
    ([0, 1], [0, 1], ['device=desktop'])
    >>> read_log("action,reward\\n0,1\\n")
    Traceback (most recent call last):
    ...
    decisions.logfile.LogFileError: line 1: no propensity column (propensity or \
propensity_score); the columns are action, reward
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bandits.ope import Log

__all__ = ["COLUMNS", "MAX_ARMS", "MAX_LEVELS", "MAX_ROUNDS", "LogFileError", "Rounds", "read_log"]

COLUMNS = {  # what each column is called, in this format and in the Open Bandit Dataset's
    "action": ("action", "item_id"),
    "reward": ("reward", "click"),
    "propensity": ("propensity", "propensity_score"),
    "position": ("position",),
}
_IGNORED = ("", "timestamp")
MAX_LEVELS = 100  # values a categorical context column may take
MAX_ROUNDS = 1_000_000
MAX_ARMS = 1_000


class LogFileError(ValueError):
    """A file not in the format: ``line`` (1: the header) and ``column`` say where."""

    def __init__(self, message: str, line: int, column: str | None = None):
        where = f"line {line}" + (f", column {column}" if column else "")
        super().__init__(f"{where}: {message}")
        self.line = line
        self.column = column


@dataclass(frozen=True)
class Rounds:
    """The rounds of a file: arms, positions (0 first), rewards, propensities, and the context
    as numbers (rounds × features, named by ``context_names``)."""

    arms: NDArray[np.int64]
    positions: NDArray[np.int64]
    rewards: NDArray[np.float64]
    propensities: NDArray[np.float64]
    contexts: NDArray[np.float64]
    context_names: list[str]

    @property
    def size(self) -> int:
        return len(self.arms)

    def log(self, rows: slice = slice(None)) -> Log:
        """``rows`` of it as a ``bandits.ope.Log`` (one decision per row)."""
        return Log(
            arms=self.arms[rows],
            propensities=self.propensities[rows],
            rewards=self.rewards[rows],
            counts=np.ones(len(self.arms[rows])),
            contexts=self.contexts[rows],
            positions=self.positions[rows],
        )


def read_log(text: str) -> Rounds:
    """Parse and check a logged-bandit CSV (see the module); ``LogFileError`` names the line
    and the column of the first problem."""
    reader = csv.reader(io.StringIO(text))
    try:
        return _read(reader)
    except csv.Error as exc:  # (a NUL byte, a field over the csv module's limit, …)
        raise LogFileError(f"not CSV: {exc}", reader.line_num) from None


def _read(reader: Any) -> Rounds:
    header = next(reader, None)
    if not header:
        raise LogFileError("the file is empty: a header row comes first", 1)
    names = [h.strip() for h in header]
    where = {}
    for role, aliases in COLUMNS.items():
        found = [i for i, name in enumerate(names) if name in aliases]
        if len(found) > 1:
            raise LogFileError(f"more than one {role} column ({' or '.join(aliases)})", 1)
        if found:
            where[role] = found[0]
        elif role != "position":
            raise LogFileError(f"no {role} column ({' or '.join(aliases)}); the columns are "
                               f"{', '.join(names)}", 1)  # fmt: skip
    known = set(where.values())
    context = [i for i, name in enumerate(names) if i not in known and name not in _IGNORED]
    arms, positions, rewards, propensities, cells = [], [], [], [], []
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(names):
            raise LogFileError(f"{len(row)} cells, the header has {len(names)}", line)
        if len(arms) >= MAX_ROUNDS:
            raise LogFileError(f"more than {MAX_ROUNDS:,} rounds", line)
        arms.append(_integer(row, where["action"], names, line, 0, MAX_ARMS - 1))
        positions.append(
            _integer(row, where["position"], names, line, 1, MAX_ARMS) - 1
            if "position" in where
            else 0
        )
        rewards.append(_number(row, where["reward"], names, line))
        p = _number(row, where["propensity"], names, line)
        if not 0.0 < p <= 1.0:
            raise LogFileError(f"must lie in (0, 1], got {row[where['propensity']]!r}", line,
                               names[where["propensity"]])  # fmt: skip
        propensities.append(p)
        cells.append([row[i].strip() for i in context])
    if not arms:
        raise LogFileError("no rounds after the header", 2)
    features, feature_names = _contexts(cells, [names[i] for i in context])
    return Rounds(
        arms=np.array(arms, dtype=np.int64),
        positions=np.array(positions, dtype=np.int64),
        rewards=np.array(rewards, dtype=float),
        propensities=np.array(propensities, dtype=float),
        contexts=features,
        context_names=feature_names,
    )


def _number(row: list[str], i: int, names: list[str], line: int) -> float:
    text = row[i].strip()
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise LogFileError(f"must be a number, got {text!r}", line, names[i])
    return value


def _integer(row: list[str], i: int, names: list[str], line: int, least: int, most: int) -> int:
    text = row[i].strip()
    if not text.lstrip("-").isdigit() or not least <= int(text) <= most:
        raise LogFileError(f"must be an integer from {least} to {most}, got {text!r}", line,
                           names[i])  # fmt: skip
    return int(text)


def _contexts(cells: list[list[str]], names: list[str]) -> tuple[NDArray[np.float64], list[str]]:
    """The context columns as features: numbers as they are, categories one-hot."""
    columns: list[NDArray[np.float64]] = []
    feature_names: list[str] = []
    for j, name in enumerate(names):
        values = [row[j] for row in cells]
        empty = next((k for k, v in enumerate(values) if not v), None)
        if empty is not None:
            raise LogFileError("the cell is empty (every context cell needs a value)", empty + 2,
                               name)  # fmt: skip
        try:
            numbers = np.array([float(v) for v in values])
            if np.all(np.isfinite(numbers)):
                columns.append(numbers)
                feature_names.append(name)
                continue
        except ValueError:
            pass
        levels = list(dict.fromkeys(values))
        if len(levels) > MAX_LEVELS:
            raise LogFileError(f"{len(levels):,} distinct values: a context column is a number "
                               f"or a category of at most {MAX_LEVELS} values (leave it out)", 1,
                               name)  # fmt: skip
        for level in levels[1:]:
            columns.append(np.array([1.0 if v == level else 0.0 for v in values]))
            feature_names.append(f"{name}={level}")
    matrix = np.column_stack(columns) if columns else np.zeros((len(cells), 0))
    return np.asarray(matrix, dtype=np.float64), feature_names
