"""qlib.model on CPU with tiny inputs; never touches the network (see the autouse fixture)."""

import os
import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import TensorDataset

from qlib.model import (
    BACKBONES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    EmbeddingNet,
    EmbeddingOutput,
    WeightsUnavailableError,
    default_image_size,
    embed_images,
)

DOWNLOAD_CALLS = []


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """An empty torch hub in a tmp dir and a download that fails at once, in every test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def refuse_download(url, *args, **kwargs):
        DOWNLOAD_CALLS.append(url)
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse_download)
    DOWNLOAD_CALLS.clear()
    return tmp_path


def images(batch=2, size=64, seed=0):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def small_net(**kwargs):
    torch.manual_seed(0)
    kwargs = {"backbone": "smallcnn", "embedding_dim": 16, "n_coarse": 3, "n_fine": 5, **kwargs}
    return EmbeddingNet(**kwargs)


def resnet18_file_name():
    return os.path.basename(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url)


# --- shapes and normalisation -----------------------------------------------------------------


@pytest.mark.parametrize("backbone", ["smallcnn", "resnet18"])
def test_forward_shapes_and_unit_norm(backbone):
    model = small_net(backbone=backbone)
    out = model(images())
    assert isinstance(out, EmbeddingOutput)
    assert out.embedding.shape == (2, 16)
    assert out.coarse_logits.shape == (2, 3)
    assert out.fine_logits.shape == (2, 5)
    torch.testing.assert_close(out.embedding.norm(dim=1), torch.ones(2))
    assert model.embed(images()).shape == (2, 16)


def test_smallcnn_accepts_32px_and_is_small():
    model = small_net()
    assert model(images(size=32)).embedding.shape == (2, 16)
    assert sum(p.numel() for p in model.backbone.parameters()) < 500_000


def test_normalize_false_and_heads_read_the_raw_embedding():
    model = small_net().eval()
    x = images()
    normalised = model(x)
    model.normalize = False
    raw = model(x)
    assert not torch.allclose(raw.embedding.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(normalised.embedding, F.normalize(raw.embedding, dim=1))
    torch.testing.assert_close(normalised.coarse_logits, raw.coarse_logits)
    torch.testing.assert_close(normalised.fine_logits, model.fine_head(raw.embedding))


def test_embed_equals_forward_embedding():
    for normalize in (True, False):
        model = small_net(normalize=normalize).eval()
        x = images()
        torch.testing.assert_close(model.embed(x), model(x).embedding)


def test_default_image_size():
    assert default_image_size("smallcnn") == 64
    for name in BACKBONES[1:]:
        assert default_image_size(name) == 224


# --- frozen BatchNorm -------------------------------------------------------------------------


def bn_stats(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k}


def test_freeze_bn_keeps_statistics_in_train_mode():
    model = small_net(freeze_bn=True).train()
    assert model.training
    before = bn_stats(model)
    model(images(batch=4)).embedding.sum().backward()
    after = bn_stats(model)
    assert before.keys() == after.keys() and len(before) > 0
    for key in before:
        assert torch.equal(before[key], after[key]), key
    bn_params = [
        p for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()
    ]
    assert bn_params and all(not p.requires_grad for p in bn_params)
    assert model.embedding.weight.grad is not None


def test_without_freeze_bn_statistics_move():
    model = small_net(freeze_bn=False).train()
    before = bn_stats(model)
    model(images(batch=4))
    after = bn_stats(model)
    assert any(not torch.equal(before[k], after[k]) for k in before if "mean" in k)


def test_freeze_bn_resnet18_after_eval_then_train():
    model = small_net(backbone="resnet18", freeze_bn=True)
    model.eval().train()
    before = bn_stats(model)
    model(images())
    after = bn_stats(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


# --- pretrained weights -----------------------------------------------------------------------


def saved_resnet18(path, wrap=None):
    torch.manual_seed(123)
    reference = torchvision.models.resnet18(weights=None)
    state = reference.state_dict()
    torch.save(state if wrap is None else {wrap: state, "epoch": 3}, path)
    return state


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_local_weights_round_trip(tmp_path, wrap):
    path = tmp_path / "resnet18.pth"
    state = saved_resnet18(path, wrap)
    model = small_net(backbone="resnet18", pretrained=path)
    loaded = model.backbone.state_dict()
    compared = 0
    for key, value in state.items():
        if key.startswith("fc."):
            assert key not in loaded
            continue
        assert torch.equal(loaded[key], value), key
        compared += 1
    assert compared == len(loaded)
    assert not DOWNLOAD_CALLS


def test_local_weights_of_another_architecture_are_rejected(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="do not match the backbone"):
        small_net(backbone="resnet18", pretrained=path)


def test_missing_local_weights_file(tmp_path):
    missing = tmp_path / "nowhere" / "weights.pth"
    with pytest.raises(FileNotFoundError, match="weights.pth"):
        small_net(backbone="resnet18", pretrained=missing)


def test_imagenet_weights_read_from_hub_cache(tmp_path):
    checkpoints = tmp_path / "torch_home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    state = saved_resnet18(checkpoints / resnet18_file_name())
    model = small_net(backbone="resnet18", pretrained="imagenet")
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])
    assert not DOWNLOAD_CALLS


def test_imagenet_weights_unavailable_gives_one_clear_error(tmp_path):
    with pytest.raises(WeightsUnavailableError) as info:
        small_net(backbone="resnet18", pretrained="imagenet")
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert resnet18_file_name() in message
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints") in message
    assert "pretrained=" in message
    assert "http" not in message
    assert len(DOWNLOAD_CALLS) == 1  # torchvision was tried once, and failed fast


def test_imagenet_for_smallcnn_is_a_value_error():
    with pytest.raises(ValueError, match="smallcnn"):
        small_net(pretrained="imagenet")


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"backbone": "vgg16"},
        {"n_fine": 0},
        {"n_coarse": None},
        {"embedding_dim": 2.5},
        {"pretrained": 3},
    ],
)
def test_bad_constructor_arguments(kwargs):
    with pytest.raises(ValueError):
        small_net(**kwargs)


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(ValueError, match="smallcnn, resnet18, resnet34, resnet50, resnet101"):
        default_image_size("resnet152")


@pytest.mark.parametrize(
    "x",
    [torch.zeros(2, 64, 64), torch.zeros(2, 1, 64, 64), torch.zeros(2, 3, 8, 8, dtype=torch.long)],
)
def test_bad_images(x):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        small_net()(x)


def test_uint8_images_are_normalised_by_the_model():
    net = small_net().eval()
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    by_hand = (images.float() / 255 - mean) / std
    with torch.no_grad():
        torch.testing.assert_close(net.embed(images), net.embed(by_hand), rtol=1e-5, atol=1e-6)


# --- embed_images -----------------------------------------------------------------------------


@pytest.mark.parametrize("start_in_train_mode", [True, False])
def test_embed_images_order_shape_and_mode(start_in_train_mode):
    model = small_net()
    model.train(start_in_train_mode)
    x = images(batch=7, size=32, seed=1)
    dataset = TensorDataset(x, torch.arange(7), torch.arange(7) % 2)
    embeddings = embed_images(model, dataset, batch_size=3)
    assert model.training == start_in_train_mode
    assert embeddings.shape == (7, 16) and embeddings.dtype == torch.float32
    assert not embeddings.requires_grad
    with torch.no_grad():
        expected = torch.cat([model.eval().embed(x[i : i + 1]) for i in range(7)])
    torch.testing.assert_close(embeddings, expected, rtol=1e-5, atol=1e-5)


def test_embed_images_from_a_loader_and_bad_input():
    model = small_net()
    dataset = TensorDataset(images(batch=3, size=32), torch.zeros(3))
    loader = torch.utils.data.DataLoader(dataset, batch_size=2)
    torch.testing.assert_close(embed_images(model, loader), embed_images(model, dataset))
    with torch.random.fork_rng():
        state = torch.get_rng_state()
        embed_images(model, dataset)
        assert torch.equal(torch.get_rng_state(), state)  # no draw from the global RNG
    with pytest.raises(ValueError, match="empty"):
        embed_images(model, TensorDataset(torch.zeros(0, 3, 32, 32)))
    with pytest.raises(ValueError, match="batch_size"):
        embed_images(model, dataset, batch_size=0)
