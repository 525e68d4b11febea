"""The example configurations parse into valid VMC configurations."""

from pathlib import Path

import pytest

from naqs.vmc import VMCConfig, load_config

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_is_valid(path):
    # the examples target a GPU; validate everything else on any machine
    config = VMCConfig.from_dict({**load_config(path), "device": "cpu"})
    config.validate()
    assert config.total_steps > 0


def test_examples_exist():
    assert len(EXAMPLES) >= 2
