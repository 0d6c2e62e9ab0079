"""The explicit strategy registry agrees with the modules it names."""

from __future__ import annotations

import dataclasses

import pytest

from tunelab.errors import TunelabError
from tunelab.strategies import STRATEGIES, get_strategy, strategy_info
from tunelab.strategies.base import first_doc_line


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_registry_entry_matches_its_module(name):
    info, strategy = STRATEGIES[name], get_strategy(name)
    assert strategy.name == name and strategy.config_cls is info.options
    assert strategy.can_merge == info.can_merge
    assert strategy.summary == f"{name}: {info.summary}"
    assert info.options.__name__.endswith("Options")
    assert dataclasses.is_dataclass(info.options)


def test_unknown_strategy_is_a_one_line_error():
    with pytest.raises(TunelabError, match="choose one of full, freeze"):
        strategy_info("dora")


def test_summaries_are_the_modules_first_doc_lines():
    import importlib

    for name, info in STRATEGIES.items():
        module = importlib.import_module(info.module)
        assert first_doc_line(module.__doc__) == f"{name}: {info.summary}"
