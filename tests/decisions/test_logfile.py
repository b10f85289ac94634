"""The logged-bandit file format: what it reads, and an error naming the line and the column
for what it does not."""

from __future__ import annotations

import pytest

from decisions.logfile import LogFileError, read_log

HEADER = "action,position,reward,propensity"


def test_the_open_bandit_dataset_layout_reads_as_it_is() -> None:
    text = (",timestamp,item_id,position,click,propensity_score,user_feature_0,affinity_0\n"
            "0,2019-11-24 00:00:34+00:00,14,3,0,0.0125,aa,0.5\n"
            "1,2019-11-24 00:00:53+00:00,2,1,1,0.0125,bb,0.0\n"
            "2,2019-11-24 00:01:02+00:00,2,2,0,0.0125,aa,1.5\n")  # fmt: skip
    rounds = read_log(text)
    assert rounds.arms.tolist() == [14, 2, 2]
    assert rounds.positions.tolist() == [2, 0, 1]  # 1 first, as 0
    assert rounds.rewards.tolist() == [0.0, 1.0, 0.0]
    assert rounds.propensities.tolist() == [0.0125] * 3
    assert rounds.context_names == ["user_feature_0=bb", "affinity_0"]
    assert rounds.contexts.tolist() == [[0.0, 0.5], [1.0, 0.0], [0.0, 1.5]]


def test_position_is_optional() -> None:
    rounds = read_log("action,reward,propensity\n1,0.5,0.25\n")
    assert rounds.positions.tolist() == [0] and rounds.contexts.shape == (1, 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "line 1: the file is empty: a header row comes first", id="empty"),
        pytest.param(HEADER + "\n", "line 2: no rounds after the header", id="no-rounds"),
        pytest.param("action,reward\n0,1\n", "line 1: no propensity column (propensity or "
                     "propensity_score); the columns are action, reward", id="no-propensity"),
        pytest.param("action,item_id,reward,propensity\n", "line 1: more than one action "
                     "column (action or item_id)", id="two-actions"),
        pytest.param(HEADER + "\n0,1,1,0.5\n0,1,1\n", "line 3: 3 cells, the header has 4",
                     id="short-row"),
        pytest.param(HEADER + "\n0,1,1," + "9" * 200_000 + "\n", "line 2: not CSV: field "
                     "larger than field limit (131072)", id="huge-field"),
        pytest.param(HEADER + "\n-1,1,1,0.5\n", "line 2, column action: must be an integer "
                     "from 0 to 999, got '-1'", id="negative-action"),
        pytest.param(HEADER + "\n0,0,1,0.5\n", "line 2, column position: must be an integer "
                     "from 1 to 1000, got '0'", id="position-0"),
        pytest.param(HEADER + "\n0,1,yes,0.5\n", "line 2, column reward: must be a number, got "
                     "'yes'", id="reward-text"),
        pytest.param(HEADER + "\n0,1,nan,0.5\n", "line 2, column reward: must be a number, got "
                     "'nan'", id="reward-nan"),
        pytest.param(HEADER + "\n0,1,1,1.5\n", "line 2, column propensity: must lie in (0, 1], "
                     "got '1.5'", id="propensity-over-1"),
        pytest.param(HEADER + ",device\n0,1,1,0.5,mobile\n0,1,1,0.5,\n", "line 3, column "
                     "device: the cell is empty (every context cell needs a value)",
                     id="empty-context"),
        pytest.param(HEADER + ",user\n" + "".join(f"0,1,1,0.5,u{i}\n" for i in range(101)),
                     "line 1, column user: 101 distinct values: a context column is a number or "
                     "a category of at most 100 values (leave it out)", id="an-id-column"),
    ],
)  # fmt: skip
def test_a_file_out_of_format_says_where(text: str, message: str) -> None:
    with pytest.raises(LogFileError) as raised:
        read_log(text)
    assert str(raised.value) == message
