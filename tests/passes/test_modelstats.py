"""Parameter and multiply-accumulate counting."""

import torch
from torch import nn

from exporter.modelstats import count_macs, count_params, layer_table


def test_count_params_counts_shared_parameters_once() -> None:
    layer = nn.Linear(4, 3)
    assert count_params(nn.Sequential(layer, nn.ReLU(), layer)) == 4 * 3 + 3


def test_count_macs_is_per_sample_and_groups_aware() -> None:
    model = nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1),  # 8*4*9 per pixel, 8x8 pixels
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise: 8*9 per pixel
        nn.Conv2d(8, 8, 1, groups=2),  # grouped: 8*4 per pixel
        nn.Flatten(),
        nn.Linear(8 * 64, 10),
    )
    expected = 64 * (8 * 4 * 9 + 8 * 9 + 8 * 4) + 8 * 64 * 10
    assert count_macs(model, (torch.randn(5, 4, 8, 8),)) == expected


def test_counting_leaves_the_model_as_it_was() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    table = layer_table(model, (torch.randn(2, 3),))
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not model._forward_hooks and not model[0]._forward_hooks
    assert table == [{"layer": "0", "type": "Linear", "params": 12, "macs": 9, "output_shape": [1, 3]}]
