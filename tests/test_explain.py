"""Explanations: Grad-CAM finds the evidence, layers are found in any CNN, Integrated Gradients adds up."""

from __future__ import annotations

from collections import OrderedDict
from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch
from hydra.utils import instantiate
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import TensorDataset

from medlit.cli.explain import explain
from medlit.data.base import ClassificationDataModule
from medlit.deploy.rebuild import load_run
from medlit.errors import ConfigError
from medlit.evaluation.predictions import Predictions
from medlit.interpret import attribution, figures
from medlit.interpret.explain import choose_examples, explain_examples
from medlit.models import BaselineCNN
from medlit.models.text import BiLSTM, TextFFN, TextTransformer
from medlit.training.classifier import Classifier
from tests.conftest import best_checkpoint, compose_config, offline
from tests.helpers import pixel, rendered

SIZE, PATCH = 48, (slice(6, 18), slice(28, 40))  # a 12 px square in the top right corner


def patch_images(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise; class 1 has a bright square in one fixed place, class 0 has none."""
    labels = np.arange(n) % 2
    images = rng.normal(60, 20, (n, 1, SIZE, SIZE))
    images[labels == 1, :, PATCH[0], PATCH[1]] += 150
    return torch.from_numpy(images.clip(0, 255).astype(np.uint8)), torch.from_numpy(labels)


@pytest.fixture(scope="module")
def patch_model() -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    """A baseline CNN trained until the bright patch decides its class, and 32 new test images with their labels."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images, labels = patch_images(128, rng)
    model = Classifier(BaselineCNN(1, 2, SIZE, filters=8), num_classes=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(5):
        for batch in torch.randperm(128).split(32):
            loss = model.loss(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    test_images, test_labels = patch_images(32, rng)
    with torch.no_grad():
        predicted = model.predict_labels(model.probabilities(model(test_images)))
    assert torch.equal(predicted, test_labels), "the patch decides the class"
    return model, test_images, test_labels


def test_grad_cam_of_a_trained_cnn_puts_most_heat_on_the_deciding_patch(patch_model):
    model, test_images, test_labels = patch_model
    positives = test_images[test_labels == 1]
    layer = attribution.find_cam_layer(model, positives[:1])
    assert layer == "net.features.4"  # the ReLU after the last convolution, before pooling
    heat = attribution.grad_cam(model, positives, torch.ones(len(positives), dtype=torch.long), layer)
    on_patch = heat[:, PATCH[0], PATCH[1]].sum(dim=(1, 2)) / heat.sum(dim=(1, 2))
    assert on_patch.min() > 0.5, on_patch  # the patch is 6 % of the image


def test_lime_paints_the_deciding_patch_green(patch_model):
    """The superpixels of the bright patch weigh most for the positive class, and the figure paints them green over
    the image, while a superpixel that weighs nothing stays the grey of the image."""
    model, test_images, test_labels = patch_model
    image = test_images[test_labels == 1][0]
    weights = attribution.lime(model, image, target=1, segments=40, samples=300).numpy()
    patch = weights[PATCH[0], PATCH[1]]
    assert np.unravel_index(weights.argmax(), weights.shape) in {(r, c) for r in range(6, 18) for c in range(28, 40)}
    assert patch.mean() > 0.5 * weights.max()

    shown = image[0].numpy() / 255
    figure = figures.explanation_grid([shown], [weights], ["tp"], columns=1, title="LIME", diverging=True)
    pixels = rendered(figure)
    left, right = figure.axes
    centre = (PATCH[1].start + 6, PATCH[0].start + 6)
    grey = pixel(pixels, left, *centre)
    green = pixel(pixels, right, *centre)
    assert abs(grey[0] - grey[1]) <= 2 and abs(grey[1] - grey[2]) <= 2, grey  # the bright patch, in grey
    assert green[1] > green[0] + 50 and green[1] > green[2] + 50, green
    blank = np.argwhere(weights == 0)
    if len(blank):  # a superpixel LIME left at zero shows the image alone
        row, col = blank[len(blank) // 2]
        assert np.abs(pixel(pixels, right, col, row) - pixel(pixels, left, col, row)).max() <= 2


def test_the_activation_figure_shows_each_convolutions_first_feature_maps(trained_run):
    """Row by row, the figure's panels are the first channels of each convolution's output for the explained image,
    as a forward hook on the network sees them, labelled with the layer and its map size."""
    run = load_run(best_checkpoint(trained_run))
    result = explain_examples(run.model, run.datamodule, methods=["activations"], examples=1, activation_channels=4)
    image = run.datamodule.test_set[result.examples[0].index][0]
    outputs = {}
    convolutions = [(n, m) for n, m in run.model.named_modules() if isinstance(m, nn.Conv2d)]
    for name, module in convolutions:
        module.register_forward_hook(lambda module, args, out, name=name: outputs.update({name: out[0].clone()}))
    with torch.no_grad():
        run.model.eval()(image.unsqueeze(0))
    axes = np.array(result.figures["activations"].axes).reshape(len(convolutions), 4)
    for (name, _), row in zip(convolutions, axes, strict=True):
        _, height, width = outputs[name].shape
        assert row[0].get_ylabel() == f"{name}\n{width}×{height}"
        for channel, ax in enumerate(row):
            assert np.allclose(ax.images[0].get_array(), outputs[name][channel].numpy(), atol=1e-5), (name, channel)


@pytest.mark.parametrize(
    ("model", "layer", "kind"),
    [
        ("densenet121", "net.backbone.features.norm5.act", "the final norm's activation"),
        ("vgg16", "net.backbone.features.29", "the ReLU after the last convolution (features.28), before pooling"),
    ],
)
def test_grad_cam_layer_of_densenet_and_vgg(model, layer, kind, tmp_path):
    """The transfer models as their configs build them (random weights), on 64 px images: a 2 x 2 final map."""
    net = instantiate(offline(compose_config([f"model={model}", "data=chest_xray"], tmp_path)).model)
    classifier = Classifier(net, num_classes=2).eval()
    images = torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8)
    assert attribution.find_cam_layer(classifier, images[:1]) == layer, kind
    modules = dict(classifier.named_modules())
    assert isinstance(modules[layer], nn.ReLU)
    if model == "vgg16":
        assert isinstance(modules["net.backbone.features.28"], nn.Conv2d)
        assert not any(isinstance(modules[f"net.backbone.features.{i}"], nn.Conv2d) for i in (29, 30))
    heat = attribution.grad_cam(classifier, images, torch.tensor([0, 1]), layer)
    assert heat.shape == (2, 64, 64) and heat.min() >= 0 and heat.max() <= 1


@pytest.mark.parametrize(
    ("name", "layer", "last_stage"),
    [
        ("resnet18", "net.backbone.layer4.1.act2", "net.backbone.layer4"),
        ("mobilenetv2_100", "net.backbone.bn2.act", "net.backbone.blocks.6"),
    ],
)
def test_grad_cam_layer_is_found_in_timm_networks(name, layer, last_stage):
    """A timm backbone without its classifier under a dense head, as the transfer-learning models are built."""
    backbone = timm.create_model(name, pretrained=False, num_classes=0, in_chans=1)
    net = nn.Sequential(OrderedDict(backbone=backbone, head=nn.Linear(backbone.num_features, 1)))
    model = Classifier(net, num_classes=2).eval()
    images = torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8)
    assert attribution.find_cam_layer(model, images[:1]) == layer  # its 2 x 2 final feature map
    heat = attribution.grad_cam(model, images, torch.tensor([0, 1]), layer)
    assert heat.shape == (2, 64, 64) and heat.min() >= 0 and heat.max() <= 1
    assert attribution.activation_layers(model)[-1] == last_stage
    # on images too small for the last stage to keep a spatial map, the last one that does is taken
    assert attribution.find_cam_layer(model, images[:1, :, :32, :32]) != layer


def test_a_named_layer_that_does_not_exist_is_explained():
    model = Classifier(BaselineCNN(1, 2, 28), num_classes=2)
    with pytest.raises(ConfigError, match=r"layer=net.features.9 is not a module of this model; did you mean"):
        attribution.find_cam_layer(model, torch.zeros(1, 1, 28, 28, dtype=torch.uint8), "net.features.9")


class WordSum(nn.Module):
    """A linear text model: the logit is the sum of one weight per token ([PAD] and [UNK] weigh nothing)."""

    def __init__(self, weights: list[float]) -> None:
        super().__init__()
        self.embedding = nn.Embedding(len(weights), 1, padding_idx=0)
        self.embedding.weight.data = torch.tensor(weights).view(-1, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids).sum(dim=1)


class WordTokenizer:
    """The part of a Hugging Face `tokenizers.Tokenizer` explanations use: padding id, unknown token, words."""

    def __init__(self) -> None:
        self.padding = {"pad_id": 0}
        self.model = SimpleNamespace(unk_token="[UNK]")
        self.words = ["[PAD]", "[UNK]", "great", "awful", "film", "plot"]

    def id_to_token(self, token_id: int) -> str:
        return self.words[token_id]

    def token_to_id(self, token: str) -> int:
        return self.words.index(token)


class Reviews(ClassificationDataModule):
    def __init__(self, ids: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__(batch_size=4)
        self.class_names = ["negative", "positive"]
        self.val_set = self.test_set = TensorDataset(ids, labels)
        self.tokenizer = WordTokenizer()


WEIGHTS = [0.0, 0.0, 2.0, -3.0, 0.5, -0.25]


def test_integrated_gradients_of_a_linear_text_model_are_its_word_weights():
    model = Classifier(WordSum(WEIGHTS), num_classes=2).eval()
    ids = torch.tensor([[2, 4, 5, 0, 0], [3, 4, 2, 3, 0]])
    scores, delta = attribution.integrated_gradients(model, ids, torch.tensor([1, 0]), "net.embedding", 0, 1, steps=20)
    # class 1 is explained through +z, class 0 through -z; padding gets nothing
    assert torch.allclose(scores[0], torch.tensor([2.0, 0.5, -0.25, 0, 0]), atol=1e-5)
    assert torch.allclose(scores[1], -torch.tensor([-3.0, 0.5, 2.0, -3.0, 0]), atol=1e-5)
    assert delta.abs().max() < 1e-4

    data = Reviews(ids, torch.tensor([1, 0]))
    result = explain_examples(model, data, examples=1, ig_steps=20)
    assert [(e.group, e.index) for e in result.examples] == [("tp", 0), ("tn", 1)]
    page = result.html
    assert page.count("<section>") == 2 and "[PAD]" not in page
    assert '<span style="background:rgba(26,152,80,1.00)" title="+2.0000">great</span>' in page
    assert '<span style="background:rgba(215,48,39,0.12)" title="-0.2500">plot</span>' in page
    assert "for: great, film" in result.summary


@pytest.mark.parametrize("name", ["bilstm", "text_transformer", "text_ffn"])
def test_text_networks_explain_a_batch_padded_beyond_its_longest_review(name, tmp_path):
    net = {
        "bilstm": lambda: BiLSTM(vocab_size=6, num_classes=2),
        "text_transformer": lambda: TextTransformer(vocab_size=6, num_classes=2, max_len=8),
        "text_ffn": lambda: TextFFN(vocab_size=6, num_classes=2, max_len=8),
    }[name]()
    model = Classifier(net, num_classes=2).eval()
    ids = torch.tensor([[2, 4, 5, 0, 0, 0, 0, 0], [3, 4, 2, 3, 0, 0, 0, 0]])
    scores, _ = attribution.integrated_gradients(model, ids, torch.tensor([1, 0]), "net.embedding", 0, 1, steps=8)
    assert scores.shape == ids.shape and torch.all(scores[ids == 0] == 0) and torch.all(scores[ids != 0] != 0)
    data = Reviews(ids, torch.tensor([1, 0]))
    assert explain_examples(model, data, examples=1, ig_steps=8).html.count("<section>") == 2


def test_a_bag_of_embeddings_has_no_tokens_to_attribute_to():
    model = Classifier(nn.Sequential(nn.EmbeddingBag(6, 4), nn.Linear(4, 1)), num_classes=2)
    with pytest.raises(ConfigError, match=r"net.0 is a bag of embeddings, pooled inside the layer"):
        attribution.find_embedding(model)


def test_image_methods_are_refused_for_text():
    model = Classifier(WordSum(WEIGHTS), num_classes=2).eval()
    data = Reviews(torch.tensor([[2, 3, 0]]), torch.tensor([1]))
    with pytest.raises(ConfigError, match=r"methods \['gradcam'\] do not apply to a text model"):
        explain_examples(model, data, methods=["gradcam"])


def test_the_most_confident_hits_and_misses_are_chosen():
    probs = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.45, 0.95])
    target = np.array([1, 1, 1, 0, 0, 0, 0])
    chosen = choose_examples(Predictions(probs, target, 0.0), threshold=0.5, per_group=1)
    assert [(e.group, e.index) for e in chosen] == [("tp", 0), ("fp", 6), ("tn", 4), ("fn", 2)]
    assert [e.group for e in choose_examples(Predictions(probs, target, 0.0), 0.65, 2, indices=[1, 3])] == ["fn", "fp"]


def test_explain_writes_grad_cam_lime_and_activations_for_a_trained_run(trained_run):
    out = trained_run / "explain-out"
    overrides = ["methods=[gradcam,lime,activations]", "examples=1", "lime.samples=40", "lime.segments=10"]
    explain(compose_config([f"ckpt_path={best_checkpoint(trained_run)}", *overrides], out, config_name="explain"))
    groups = (out / "examples.csv").read_text().splitlines()[1:]
    assert groups and all(line.split(",")[0] in {"tp", "fp", "tn", "fn"} for line in groups)
    for name in ("gradcam", "lime", "activations"):  # colour maps over grey images: jet, green/red, viridis
        with Image.open(out / f"{name}.png") as png:
            pixels = np.asarray(png.convert("RGB")).astype(int)
        assert (np.ptp(pixels, axis=2) > 60).mean() > 0.01, f"{name}.png shows no colour map"
    assert len(list((out / "gradcam").glob("*.png"))) == len(groups)
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert set(events.Tags()["images"]) == {"explain/gradcam", "explain/lime", "explain/activations"}
