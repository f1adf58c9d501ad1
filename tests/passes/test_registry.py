"""The four compression passes are registered with the names, flags and order the CLI relies on."""

import pytest

from exporter.errors import PlanError
from exporter.passes import PASSES


@pytest.mark.parametrize(
    ("name", "shorthand", "order"),
    [("fold_bn", None, 10), ("prune", "ratio", 20), ("lowrank", "energy", 30), ("sparsify", "sparsity", 40)],
)
def test_pass_is_registered(name: str, shorthand: str | None, order: int) -> None:
    cls = PASSES.get(name)
    assert (cls.name, cls.shorthand, cls.order) == (name, shorthand, order)
    config = cls.Config()
    config.validate()
    assert cls.Config.from_dict(config.to_dict(), name) == config


def test_plan_data_is_coerced_and_validated() -> None:
    config = PASSES.get("prune").Config.from_dict({"ratio": "0.3", "ignore": "fc,layer4.*"}, "prune")
    assert config.ratio == 0.3 and config.ignore == ("fc", "layer4.*")
    assert config.to_dict()["ignore"] == ["fc", "layer4.*"]
    with pytest.raises(PlanError, match="bad value 'l3' for prune.importance"):
        PASSES.get("prune").Config.from_dict({"importance": "l3"}, "prune")
