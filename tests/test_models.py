"""Every network in conf/model builds from config, has the right outputs and trains all its parameters."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from medlit.models import CustomCNN, num_logits
from tests.conftest import CONF, compose_config

MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


@pytest.mark.parametrize("data", ["pneumoniamnist", "organcmnist"])
@pytest.mark.parametrize("model", MODELS)
def test_model_outputs_and_gradients(model, data, tmp_path):
    cfg = compose_config([f"model={model}", f"data={data}"], tmp_path)
    net = instantiate(cfg.model)
    x = torch.rand(4, cfg.data.in_channels, cfg.data.image_size, cfg.data.image_size)
    out = net(x)
    assert out.shape == (4, num_logits(cfg.data.num_classes))
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("size", [28, 64, 150, 224])
def test_custom_cnn_takes_any_input_size(size):
    net = CustomCNN(in_channels=3, num_classes=5).eval()
    assert net(torch.rand(2, 3, size, size)).shape == (2, 5)


def test_binary_tasks_have_one_logit():
    assert num_logits(2) == 1
    assert num_logits(11) == 11
    with pytest.raises(ValueError, match="at least 2 classes"):
        num_logits(1)
