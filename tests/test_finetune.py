"""Two-stage fine-tuning: a frozen backbone first, then its upper layers at a lower learning rate."""

from __future__ import annotations

import pytest
import torch

from medlit.errors import MedlitError
from medlit.models import CustomCNN, TimmNet
from medlit.training.callbacks import TwoStageFinetuning, layers_from
from medlit.training.classifier import Classifier


@pytest.fixture
def model() -> Classifier:
    return Classifier(TimmNet("mobilenetv3_small_050", num_classes=2, in_chans=1, hidden=[8]), num_classes=2)


def test_layers_are_chosen_by_index_or_name(model):
    backbone = model.net.backbone
    layers = layers_from(backbone, 0)
    assert layers[0] is backbone.conv_stem
    assert layers_from(backbone, "blocks.3")[0] is backbone.blocks[3][0].conv_pw
    assert layers_from(backbone, -2) == layers[-2:]
    with pytest.raises(MedlitError, match="unfreeze_from=999, but the backbone has"):
        layers_from(backbone, 999)
    with pytest.raises(MedlitError, match=r"unfreeze_from='blocks\.99' names no layer.*conv_stem"):
        layers_from(backbone, "blocks.99")


def test_backbone_frozen_first_then_unfrozen_from_the_layer_at_a_lower_rate(model):
    callback = TwoStageFinetuning(freeze_epochs=2, unfreeze_from="blocks.3", backbone_lr_factor=0.1, train_bn=False)
    callback.freeze_before_training(model)
    backbone = model.net.backbone
    assert not any(p.requires_grad for p in backbone.parameters())
    assert all(p.requires_grad for p in model.net.head.parameters())
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    callback.finetune_function(model, 1, optimizer)
    assert len(optimizer.param_groups) == 1

    callback.finetune_function(model, 2, optimizer)
    assert len(optimizer.param_groups) == 2
    assert optimizer.param_groups[1]["lr"] == pytest.approx(1e-4)
    assert all(p.requires_grad for p in backbone.blocks[3].parameters())
    assert all(p.requires_grad for p in backbone.conv_head.parameters())
    assert not any(p.requires_grad for p in backbone.blocks[2].parameters())
    assert not backbone.conv_stem.weight.requires_grad


def test_a_network_without_backbone_is_explained():
    with pytest.raises(MedlitError, match=r"needs a network with a backbone.*CustomCNN has none"):
        TwoStageFinetuning().freeze_before_training(Classifier(CustomCNN(1, 2), num_classes=2))


def test_a_frozen_backbone_still_trains_its_batchnorm_layers(finetuned_mobilenetv2_run):
    """`train_bn=true` (the default): in the frozen first epoch every BatchNorm layer of the backbone learns its scale
    and shift and moves its running statistics towards the X-rays' (two batches seen), while every convolution
    stays as it was."""
    run, initial = finetuned_mobilenetv2_run
    first = torch.load(run / "checkpoints" / "epoch_000.ckpt", weights_only=True)["state_dict"]
    norms = [k.removesuffix(".running_mean") for k in initial if k.endswith(".running_mean")]
    assert len(norms) == 52 and all(n.startswith("net.backbone.") for n in norms)  # MobileNetV2's BatchNorm layers
    for norm in norms:
        for part in ("weight", "bias", "running_mean", "running_var"):
            assert not torch.equal(initial[f"{norm}.{part}"], first[f"{norm}.{part}"]), f"{norm}.{part}"
        assert int(first[f"{norm}.num_batches_tracked"]) == int(initial[f"{norm}.num_batches_tracked"]) + 2
    convolutions = [k for k, v in initial.items() if k.startswith("net.backbone.") and v.ndim == 4]
    assert convolutions and all(torch.equal(initial[k], first[k]) for k in convolutions)
