"""ResNet U-Net, presets and weight loading (smir_lib.models)."""

import json
from pathlib import Path

import pytest
import torch

from smir_lib.models import (
    PRESETS,
    ResNetUNet,
    build_unet,
    count_parameters,
    load_imagenet_encoder,
    load_pretrained,
    pad_to_multiple,
)

pytestmark = pytest.mark.unit

FIXTURE = Path(__file__).parent / "fixtures" / "torchvision_resnet_keys.json"
GOLDEN = Path(__file__).parent / "fixtures" / "tiny_unet_golden.pt"


@pytest.fixture(scope="module")
def torchvision_keys() -> dict[str, dict[str, list[int]]]:
    """Key -> shape of torchvision's resnet18 / resnet34 state dicts (written from its source)."""
    return json.loads(FIXTURE.read_text())


def torchvision_state_dict(shapes: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """A stand-in for a torchvision ImageNet file: random tensors of the right shapes."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.tensor(7) if k.endswith("num_batches_tracked") else torch.randn(s, generator=g)
            for k, s in shapes.items()}


def test_fixture_matches_torchvision_documented_parameter_counts(torchvision_keys):
    """torchvision documents 11,689,512 (resnet18) and 21,797,672 (resnet34) parameters."""
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    for name, expected in [("resnet18", 11_689_512), ("resnet34", 21_797_672)]:
        shapes = [s for k, s in torchvision_keys[name].items() if not k.endswith(buffers)]
        assert sum(torch.Size(s).numel() for s in shapes) == expected


def test_paper_preset_has_24_4_million_parameters():
    assert count_parameters(build_unet("resnet34", 3)) == 24_383_235  # "about 24.4 M"


def test_other_preset_parameter_counts():
    assert count_parameters(build_unet("resnet18", 3)) == 14_275_075
    assert count_parameters(build_unet("tiny", 3)) == 896_131  # CPU demos: well under 1 M
    assert set(PRESETS) == {"resnet34", "resnet18", "tiny"}


@pytest.mark.parametrize("name", ["resnet34", "resnet18"])
def test_encoder_keys_and_shapes_match_torchvision(torchvision_keys, name):
    encoder = build_unet(name).encoder.state_dict()
    expected = {k: s for k, s in torchvision_keys[name].items() if not k.startswith("fc.")}
    assert list(encoder) == list(expected)  # same names, same order
    assert {k: list(v.shape) for k, v in encoder.items()} == expected


@pytest.mark.parametrize("name", ["resnet34", "resnet18"])
def test_imagenet_file_loads_strictly_into_encoder(torchvision_keys, tmp_path, name):
    state = torchvision_state_dict(torchvision_keys[name])
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    model = build_unet(name, out_channels=5)
    decoder_before = model.decoder.state_dict()["blocks.0.0.0.weight"].clone()
    load_imagenet_encoder(model, path)
    for key in ("conv1.weight", "layer4.1.bn2.running_var", "layer2.0.downsample.0.weight"):
        assert torch.equal(model.encoder.state_dict()[key], state[key])
    assert torch.equal(model.decoder.state_dict()["blocks.0.0.0.weight"], decoder_before)


def test_imagenet_mismatch_names_the_offending_keys(torchvision_keys, tmp_path):
    state = torchvision_state_dict(torchvision_keys["resnet34"])
    state["layer1.0.conv9.weight"] = state.pop("layer1.0.conv1.weight")
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"1 missing keys: layer1.0.conv1.weight.*"
                                         r"1 unexpected keys: layer1.0.conv9.weight"):
        load_imagenet_encoder(build_unet("resnet34"), path)
    with pytest.raises(ValueError, match=r"shape mismatches: conv1.weight \(64, 3, 7, 7\) vs "
                                         r"\(16, 3, 7, 7\)"):
        resnet18 = torchvision_state_dict(torchvision_keys["resnet18"])
        load_imagenet_encoder(build_unet("tiny"), resnet18)


@pytest.mark.parametrize("size", [(64, 64), (65, 97), (20, 30), (1, 3)])
def test_output_has_input_size(size):
    model = build_unet("tiny", out_channels=4).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, *size)).shape == (2, 4, *size)


def test_reflect_padding_is_split_evenly():
    x = torch.arange(40.0 * 45).view(1, 1, 40, 45)
    padded, (top, left) = pad_to_multiple(x, 64)
    assert padded.shape[-2:] == (64, 64) and (top, left) == (12, 9)  # 24 = 12 + 12, 19 = 9 + 10
    assert torch.equal(padded[..., top:top + 40, left:left + 45], x)
    assert padded[0, 0, top - 1, left] == x[0, 0, 1, 0]  # reflected: the row below the edge


def test_tiny_inputs_fall_back_to_replicate_padding():
    x = torch.arange(100.0).view(1, 1, 10, 10)  # a pad of 27 > 10 cannot reflect
    padded, (top, left) = pad_to_multiple(x, 64)
    assert (top, left) == (27, 27) and padded[0, 0, 0, 0] == x[0, 0, 0, 0]


def test_model_structure_follows_spec():
    model = build_unet("resnet34", out_channels=3)
    assert isinstance(model, ResNetUNet)
    assert model.encoder.channels == (64, 128, 256, 512)
    assert [b[1][0].out_channels for b in model.decoder.blocks] == [256, 128, 64]
    assert model.head.dropout.p == 0.2 and model.head.conv.kernel_size == (1, 1)
    assert isinstance(model.decoder.blocks[0][0][2], torch.nn.SiLU)


def test_load_pretrained_transfers_all_and_reinitialises_a_different_head(tmp_path):
    pretrained = build_unet("tiny", out_channels=3)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": pretrained.state_dict(), "epoch": 3}, path)
    model = build_unet("tiny", out_channels=21)
    load_pretrained(model, path)
    for key, value in pretrained.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(model.state_dict()[key], value), key
    assert model.head.conv.weight.shape == (21, 16, 1, 1)


def test_load_pretrained_same_class_count_keeps_head_unless_reset():
    pretrained = build_unet("tiny", out_channels=3)
    model = build_unet("tiny", out_channels=3)
    load_pretrained(model, pretrained.state_dict())
    assert torch.equal(model.head.conv.weight, pretrained.head.conv.weight)
    load_pretrained(model, pretrained.state_dict(), reset_head=True)
    assert not torch.equal(model.head.conv.weight, pretrained.head.conv.weight)
    assert torch.equal(model.encoder.conv1.weight, pretrained.encoder.conv1.weight)


def test_load_pretrained_errors_name_keys():
    pretrained = build_unet("tiny", out_channels=3).state_dict()
    with pytest.raises(ValueError, match=r"head.conv.weight \(3, 16, 1, 1\) vs \(5, 16, 1, 1\).*"
                                         r"reinit_head=True"):
        load_pretrained(build_unet("tiny", out_channels=5), pretrained, reinit_head=False)
    del pretrained["decoder.blocks.1.0.1.running_mean"]
    with pytest.raises(ValueError, match=r"1 missing keys: decoder.blocks.1.0.1.running_mean"):
        load_pretrained(build_unet("tiny", out_channels=5), pretrained)


def test_checkpoints_are_read_with_weights_only(tmp_path):
    """A file holding arbitrary pickled objects is refused (torch.load(weights_only=True)), in one
    line that does not pass on torch's advice to switch weights_only off."""
    path = tmp_path / "unsafe.pt"
    torch.save({"model": build_unet("tiny").state_dict(), "extra": Path("x")}, path)
    with pytest.raises(ValueError, match="unsafe.pt holds pickled Python objects.*could run code") as info:
        load_pretrained(build_unet("tiny"), path)
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)


def test_ddp_prefix_is_stripped():
    pretrained = build_unet("tiny").state_dict()
    model = build_unet("tiny")
    load_pretrained(model, {f"module.{k}": v for k, v in pretrained.items()})
    assert torch.equal(model.encoder.conv1.weight, pretrained["encoder.conv1.weight"])


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match=r"preset is 'resnet50'; expected one of"):
        build_unet("resnet50")


def test_forward_pass_matches_the_committed_golden_output():
    """A seeded tiny U-Net on a seeded 40x52 input (padding, decoder, head, crop all take part);
    tests/fixtures/make_golden_unet.py wrote the expected output when the network was checked."""
    from tests.fixtures.make_golden_unet import golden_input_and_model

    x, model = golden_input_and_model()
    with torch.no_grad():
        y = model(x)
    torch.testing.assert_close(y, torch.load(GOLDEN, weights_only=True)["output"], atol=1e-5, rtol=1e-4)


def test_decoder_upsamples_by_pixel_repetition_and_concatenates_the_skip_after():
    """Each decoder block = nearest x2 (every feature pixel copied into a 2x2 block), then
    [upsampled, skip] along channels, then the two conv-BN-SiLU layers."""
    model = build_unet("tiny", out_channels=3).eval()
    g = torch.Generator().manual_seed(0)
    features = [torch.randn(2, c, 32 // 2 ** i, 48 // 2 ** i, generator=g)
                for i, c in enumerate(model.encoder.channels)]  # strides 4..32 of a 128x192 input
    x = features[-1]
    for block, skip in zip(model.decoder.blocks, reversed(features[:-1])):
        x = x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)  # (B, C, 2h, 2w)
        x = block[1](block[0](torch.cat([x, skip], dim=1)))
    with torch.no_grad():
        torch.testing.assert_close(model.decoder(features), x.detach())
