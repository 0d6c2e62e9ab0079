"""--train.min_steps: small data trains at least that many optimizer steps."""

from __future__ import annotations

import pytest

from tunelab.errors import TunelabError
from tunelab.training.loop import plan_steps
from tunelab.training.options import TrainOptions, check_train


def test_small_data_gets_the_minimum_large_data_its_epochs():
    small = TrainOptions(epochs=2, batch_size=16, min_steps=150)
    assert plan_steps(400, small) == (25, 150)  # 2 epochs would be 50 steps
    assert plan_steps(4000, small) == (250, 500)
    assert plan_steps(400, TrainOptions(epochs=2, batch_size=16, min_steps=0)) == (25, 50)


def test_max_steps_still_wins():
    cfg = TrainOptions(epochs=2, batch_size=16, min_steps=150, max_steps=20)
    assert plan_steps(400, cfg) == (25, 20)


def test_negative_minimum_is_one_line():
    with pytest.raises(TunelabError, match="--train.min_steps"):
        check_train(TrainOptions(min_steps=-1))
