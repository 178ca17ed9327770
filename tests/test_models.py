"""Every network in conf/model builds from config, has the right outputs and trains all its parameters."""

from __future__ import annotations

import huggingface_hub
import pytest
import timm
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from medlit.data.vocabulary import PAD_ID
from medlit.errors import MedlitError
from medlit.models import BiLSTM, CustomCNN, FastText, TimmNet, num_logits
from medlit.models.text import TextFFN, align_end
from medlit.training.classifier import Classifier
from tests.conftest import CONF, compose_config, offline

MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
TEXT_MODELS = [m for m in MODELS if "vocab_size" in OmegaConf.load(CONF / "model" / f"{m}.yaml")]
IMAGE_MODELS = [m for m in MODELS if m not in TEXT_MODELS]
# the named transfer models (mobilenetv2, vgg16, ...) are TimmNets like `timm`, checked here on one task;
# every image model also runs a binary fast_dev_run on the chest X-rays in test_train
NAMED_TIMM = {m for m in MODELS if "- timm" in (CONF / "model" / f"{m}.yaml").read_text()}
CASES = [
    (m, d)
    for m in IMAGE_MODELS
    if m not in NAMED_TIMM
    for d in ("pneumoniamnist", "organcmnist")
    if m != "timm" or d == "organcmnist"
]


def assert_all_parameters_learn(net: torch.nn.Module, out: torch.Tensor) -> None:
    out.square().sum().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize(("model", "data"), CASES)
def test_model_outputs_and_gradients(model, data, tmp_path):
    cfg = offline(compose_config([f"model={model}", f"data={data}"], tmp_path))
    net = instantiate(cfg.model)
    x = torch.rand(4, cfg.data.in_channels, cfg.data.image_size, cfg.data.image_size)
    out = net(x)
    assert out.shape == (4, num_logits(cfg.data.num_classes))
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    # one update first: timm's ResNets start their residual branches at zero (zero-initialised last norm)
    torch.optim.SGD(net.parameters(), lr=0.1).step()
    net.zero_grad()
    assert_all_parameters_learn(net, net(x))


def token_ids(lengths: list[int], max_len: int, vocab_size: int) -> torch.Tensor:
    """Random word ids, padded with PAD_ID after each row's `lengths[i]` words."""
    ids = torch.randint(PAD_ID + 2, vocab_size, (len(lengths), max_len), generator=torch.Generator().manual_seed(0))
    for row, length in zip(ids, lengths, strict=True):
        row[length:] = PAD_ID
    return ids


@pytest.mark.parametrize("model", TEXT_MODELS)
def test_text_model_outputs_and_gradients(model, tmp_path):
    cfg = compose_config([f"model={model}", "data=imdb", "data.vocab_size=500", "data.max_len=40"], tmp_path)
    net = instantiate(cfg.model)
    out = net(token_ids([40, 25, 3, 0], max_len=40, vocab_size=500))
    assert out.shape == (4, 1)
    assert torch.isfinite(out).all(), "an empty review gives a finite logit too"
    assert_all_parameters_learn(net, out)


@pytest.mark.parametrize("model", [m for m in TEXT_MODELS if m != "text_ffn"])
def test_text_models_ignore_padding(model, tmp_path):
    """A review's logit is the same however much padding follows it (and whatever the batch's lengths)."""
    cfg = compose_config([f"model={model}", "data=imdb", "data.vocab_size=500", "data.max_len=60"], tmp_path)
    net = instantiate(cfg.model).eval()
    ids = token_ids([30, 12, 1], max_len=30, vocab_size=500)
    padded = torch.cat([ids, torch.zeros(3, 30, dtype=torch.long)], dim=1)
    with torch.no_grad():
        alone = torch.cat([net(ids[i : i + 1, : max(1, int((ids[i] != PAD_ID).sum()))]) for i in range(3)])
        assert torch.allclose(net(ids), alone, atol=1e-5)
        assert torch.allclose(net(padded), alone, atol=1e-5)


def test_max_pooled_bilstm_ignores_padding():
    net = BiLSTM(vocab_size=500, num_classes=2, pooling="max").eval()
    ids = token_ids([30, 12, 1], max_len=30, vocab_size=500)
    with torch.no_grad():
        alone = torch.cat([net(ids[i : i + 1, : max(1, int((ids[i] != PAD_ID).sum()))]) for i in range(3)])
        assert torch.allclose(net(torch.cat([ids, torch.zeros(3, 30, dtype=torch.long)], dim=1)), alone, atol=1e-5)


def test_the_feed_forward_network_sees_every_review_end_at_the_window_end():
    ids = torch.tensor([[5, 6, 7, 0, 0], [1, 2, 3, 4, 5], [0, 0, 0, 0, 0], [9, 0, 0, 0, 0]])
    expected = [[0, 0, 5, 6, 7], [1, 2, 3, 4, 5], [0, 0, 0, 0, 0], [0, 0, 0, 0, 9]]
    assert align_end(ids, ids).tolist() == expected
    net = TextFFN(vocab_size=10, num_classes=2, max_len=5, embed_dim=3).eval()
    seen = []
    net.embedding.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    embedded = net.embedding(ids)
    with torch.no_grad():
        aligned = net.layers(align_end(embedded, ids))
        assert torch.equal(net(ids), aligned)
    assert torch.equal(seen[-1], ids)  # attributions taken at the embedding belong to the words where they stand
    assert torch.equal(align_end(embedded, ids)[0, 2], embedded[0, 0])


@pytest.mark.parametrize("size", [28, 64, 150, 224])
def test_custom_cnn_takes_any_input_size(size):
    net = CustomCNN(in_channels=3, num_classes=5).eval()
    assert net(torch.rand(2, 3, size, size)).shape == (2, 5)


def test_binary_tasks_have_one_logit():
    assert num_logits(2) == 1
    assert num_logits(11) == 11
    with pytest.raises(ValueError, match="at least 2 classes"):
        num_logits(1)


def test_sparse_fasttext_touches_only_the_rows_of_its_batch():
    net = FastText(vocab_size=50, num_classes=2, embed_dim=4, ngrams=2, buckets=1000, sparse=True)
    ids = torch.tensor([[5, 6, 7, 0]])
    net(ids).sum().backward()
    grad = net.embedding.weight.grad
    assert grad.is_sparse
    rows = set(grad.coalesce().indices()[0].tolist())
    assert rows == set(net.ngram_ids(ids)[0].tolist()) - {PAD_ID} and len(rows) == 5  # 3 words, 2 bigrams


def test_timm_model_takes_any_timm_name_and_greyscale(tmp_path):
    cfg = offline(compose_config(["model=timm", "model.name=mobilenetv3_small_050", "model.hidden=[16]"], tmp_path))
    net = instantiate(cfg.model)
    assert net.backbone.conv_stem.in_channels == 1
    assert net(torch.rand(2, 1, 32, 32)).shape == (2, 1)
    assert net.input_mean == pytest.approx([0.449]) and net.input_std == pytest.approx([0.226])


def test_vgg16_head_sits_on_the_convolutional_base(tmp_path):
    net = instantiate(offline(compose_config(["model=vgg16"], tmp_path)).model)
    assert isinstance(net.backbone.pre_logits, torch.nn.Identity)
    assert net.head[0].in_features == 512 and net.head[0].out_features == 512


def test_weights_load_from_a_local_file_through_the_config(tmp_path):
    """ImageNet-shaped weights (3 channels, 1000 classes) saved to a file load into a greyscale model."""
    source = timm.create_model("resnet10t", pretrained=False)
    path = tmp_path / "resnet10t.pth"
    torch.save(source.state_dict(), path)
    cfg = compose_config(["model=timm", "model.name=resnet10t", f"model.checkpoint_path={path}"], tmp_path)
    net = instantiate(cfg.model)
    loaded, saved = net.backbone.state_dict(), source.state_dict()
    assert torch.equal(loaded["layer4.0.conv2.weight"], saved["layer4.0.conv2.weight"])
    stem = saved["conv1.0.weight"].sum(dim=1, keepdim=True)  # timm folds RGB filters into one channel
    assert torch.allclose(loaded["conv1.0.weight"], stem)
    assert not torch.equal(
        loaded["layer4.0.conv2.weight"], timm.create_model("resnet10t").state_dict()["layer4.0.conv2.weight"]
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.name=no_such_net"], "model.name='no_such_net' is not a timm model"),
        (
            ["model.checkpoint_path=/nowhere/weights.pth"],
            "model.checkpoint_path=/nowhere/weights.pth: no such file",
        ),
    ],
)
def test_bad_timm_settings_are_explained(tmp_path, overrides, message):
    cfg = compose_config(["model=timm", *overrides], tmp_path)
    with pytest.raises(MedlitError, match=message):
        TimmNet(**{k: v for k, v in cfg.model.items() if k != "_target_"})


def test_the_classifier_takes_the_networks_normalisation_unless_the_data_sets_one(tmp_path):
    cfg = offline(compose_config(["model=mobilenetv2", "data=chest_xray"], tmp_path))
    net = instantiate(cfg.model)
    assert cfg.classifier.input_mean is None
    assert Classifier(net, 2).input_mean.flatten().tolist() == pytest.approx([0.449])
    assert Classifier(net, 2, input_mean=[0.5], input_std=[0.2]).input_std.flatten().tolist() == [pytest.approx(0.2)]
    assert Classifier(CustomCNN(1, 2), 2).input_mean.flatten().tolist() == [0.5]


def test_pretrained_weights_without_network_name_the_offline_settings(monkeypatch, tmp_path):
    """Offline, with empty weight caches of its own: weights this machine may have cached cannot answer instead."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "huggingface"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "huggingface" / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # timm's weights by URL go to torch hub's cache
    with pytest.raises(
        MedlitError, match=r"could not fetch the pretrained weights of resnet10t .*model\.checkpoint_path"
    ):
        TimmNet("resnet10t", num_classes=2, pretrained=True)
