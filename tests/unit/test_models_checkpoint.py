"""Tests for rslib.models (architectures, input normalisation) and rslib.models.checkpoint (model files)."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from rslib.models.checkpoint import FORMAT, ModelSpec, load_model, read_checkpoint, save_model
from rslib.runtime.errors import CheckpointError, RslibError
from rslib.models.architectures import BasicBlock, CifarResNet, InputNormalization, build_model


# --- models -------------------------------------------------------------------------------------


def test_input_normalization_closed_form():
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.25, 0.5)
    layer = InputNormalization(mean, std)
    x = torch.rand(2, 3, 4, 5)
    y = layer(x)
    for c in range(3):
        assert torch.allclose(y[:, c], (x[:, c] - mean[c]) / std[c], atol=1e-6)
    # a pixel equal to the channel mean maps to 0, mean + std maps to 1
    probe = torch.tensor(mean).view(1, 3, 1, 1) + torch.tensor(std).view(1, 3, 1, 1) * torch.tensor([0.0, 1.0, -2.0]).view(1, 3, 1, 1)
    assert torch.allclose(layer(probe).flatten(), torch.tensor([0.0, 1.0, -2.0]), atol=1e-6)
    # buffers are not persistent: they are not in the state dict but follow dtype/device moves
    assert dict(layer.state_dict()) == {}
    assert layer.double().mean.dtype == torch.float64


def test_small_cnn_output_shape_and_layout():
    model = build_model("small_cnn", 10, 1, (0.5,), (0.25,))
    assert isinstance(model, nn.Sequential) and len(model) == 2
    assert isinstance(model[0], InputNormalization)
    out = model.eval()(torch.rand(2, 1, 8, 8))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


def test_resnet20_output_shape():
    model = build_model("resnet20", 10, 3, (0.49, 0.48, 0.45), (0.2, 0.2, 0.2)).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
        # adaptive pooling: also runs on small single-channel images
        gray = build_model("resnet20", 4, 1, (0.5,), (0.5,)).eval()
        assert gray(torch.rand(2, 1, 8, 8)).shape == (2, 4)


@pytest.mark.parametrize("arch, depth", [("resnet20", 20), ("resnet26", 26), ("resnet32", 32), ("resnet110", 110)])
def test_cifar_resnet_has_6n_plus_2_structure(arch, depth):
    backbone = build_model(arch, 10, 3, (0.5,) * 3, (0.25,) * 3)[1]
    n = (depth - 2) // 6
    stages = [backbone.layer1, backbone.layer2, backbone.layer3]
    assert [len(stage) for stage in stages] == [n, n, n]  # resnet110: 18 blocks per stage
    assert all(isinstance(block, BasicBlock) for stage in stages for block in stage)
    # depth counts the 3x3 convolutions on the main path plus the classifier
    convs3 = [m for m in backbone.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    linears = [m for m in backbone.modules() if isinstance(m, nn.Linear)]
    assert len(convs3) + len(linears) == depth
    # widths 16/32/64, projection shortcuts only where the shape changes
    assert [stage[0].conv1.out_channels for stage in stages] == [16, 32, 64]
    assert [stage[0].downsample is not None for stage in stages] == [False, True, True]
    assert all(block.downsample is None for stage in stages for block in stage[1:])


def test_state_dict_has_no_normalisation_keys():
    for arch, c in [("small_cnn", 1), ("resnet20", 3)]:
        model = build_model(arch, 10, c, (0.5,) * c, (0.25,) * c)
        keys = list(model.state_dict())
        assert keys and all(k.startswith("1.") for k in keys)
        assert "0.mean" in dict(model.named_buffers())  # the layer has them, only not persistent
    # Cohen et al.'s released layout
    assert "1.conv1.weight" in build_model("resnet20", 10, 3, (0.5,) * 3, (0.25,) * 3).state_dict()


def test_build_model_errors():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("resnet18", 10, 3, (0.5,) * 3, (0.25,) * 3)
    with pytest.raises(ValueError, match="channel"):
        build_model("small_cnn", 10, 3, (0.5,), (0.25,))
    with pytest.raises(ValueError, match="6n"):
        CifarResNet(21, 10)
    with pytest.raises(ValueError):
        build_model("resnet50", 10, 1, (0.5,), (0.25,))


# --- checkpoints --------------------------------------------------------------------------------


SPEC = ModelSpec(
    arch="small_cnn", dataset="digits", num_classes=10, in_channels=1, mean=(0.5,), std=(0.25,),
    sigma=0.25, method="gaussian", seed=3, hparams={"lr": 0.1, "epochs": 2, "augment": None},
)


def _trained_like_model(spec: ModelSpec = SPEC) -> nn.Module:
    torch.manual_seed(0)
    model = spec.build()
    model.train()
    with torch.no_grad():
        model(torch.rand(16, spec.in_channels, 8, 8) * 2)  # move BatchNorm running stats off defaults
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.eval()


def test_round_trip_gives_identical_outputs(tmp_path):
    model = _trained_like_model()
    extra = {"train_seconds": 1.5, "history": [{"epoch": 0, "loss": 2.25}], "provenance": {"host": "h"}}
    path = tmp_path / "models" / "m.pt"
    save_model(path, model, SPEC, extra)
    loaded, spec, loaded_extra = load_model(path, dataset="digits", sigma=0.25, method="gaussian")
    assert spec == SPEC
    assert loaded_extra == extra
    assert not loaded.training
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # a freshly built model differs, so the equality above is not an accident of initialisation
    with torch.no_grad():
        assert not torch.equal(SPEC.build().eval()(x), model(x))
    blob = read_checkpoint(path)
    assert blob["format"] == FORMAT
    assert all(k.startswith("1.") for k in blob["state_dict"])


def test_load_without_checks_and_default_extra(tmp_path):
    path = tmp_path / "m.pt"
    save_model(path, _trained_like_model(), SPEC)
    _, spec, extra = load_model(path)
    assert spec == SPEC and extra == {}


def test_sigma_mismatch_names_both_sigmas(tmp_path):
    path = tmp_path / "m.pt"
    save_model(path, _trained_like_model(), SPEC)
    with pytest.raises(CheckpointError) as info:
        load_model(path, sigma=0.5)
    message = str(info.value).replace(str(path), "<path>")
    assert "0.25" in message and "0.5" in message
    # a float rounding difference is not a mismatch
    load_model(path, sigma=0.25 + 1e-12)


@pytest.mark.parametrize(
    "kwargs, names",
    [(dict(dataset="cifar10"), ("digits", "cifar10")), (dict(method="macer"), ("gaussian", "macer"))],
    ids=["dataset", "method"],
)
def test_dataset_or_method_mismatch(tmp_path, kwargs, names):
    path = tmp_path / "m.pt"
    save_model(path, _trained_like_model(), SPEC)
    with pytest.raises(CheckpointError) as info:
        load_model(path, **kwargs)
    assert all(name in str(info.value) for name in names)
    assert isinstance(info.value, RslibError)


@pytest.mark.parametrize("mangle", ["half", "tail", "head", "empty", "random"])
def test_corrupt_file_is_reported(tmp_path, mangle):
    path = tmp_path / "m.pt"
    save_model(path, _trained_like_model(), SPEC)
    data = path.read_bytes()
    bad = {
        "half": data[: len(data) // 2],
        "tail": data[:-20],
        "head": data[:10],
        "empty": b"",
        "random": bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1), dtype=torch.uint8).tolist()),
    }[mangle]
    path.write_bytes(bad)
    with pytest.raises(CheckpointError, match="corrupt") as info:
        load_model(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)  # one-line error


@pytest.mark.parametrize("text", ["hello world\n", "a"])
def test_text_file_is_reported_as_corrupt(tmp_path, text):
    path = tmp_path / "m.pt"
    path.write_text(text)
    with pytest.raises(CheckpointError, match="corrupt"):
        read_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path)  # a directory is not a checkpoint file


@pytest.mark.parametrize("kind", ["state_dict", "other_format", "list"])
def test_other_torch_files_are_refused(tmp_path, kind):
    model = _trained_like_model()
    obj = {
        "state_dict": model.state_dict(),
        "other_format": {"format": "something/2", "state_dict": model.state_dict()},
        "list": [1, 2, 3],
    }[kind]
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="not an rslib model file"):
        load_model(path)


def test_weights_that_do_not_fit_the_architecture(tmp_path):
    path = tmp_path / "m.pt"
    save_model(path, _trained_like_model(), SPEC)
    blob = read_checkpoint(path)
    blob["spec"]["num_classes"] = 7  # spec no longer matches the fc layer's weights
    torch.save(blob, path)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(path)


def test_save_is_atomic(tmp_path):
    folder = tmp_path / "models"
    path = folder / "m.pt"
    model = _trained_like_model()
    save_model(path, model, SPEC)
    assert os.listdir(folder) == ["m.pt"]
    before = path.read_bytes()
    # a save that fails half-way (an unpicklable extra) leaves the old file and no temporaries
    with pytest.raises(Exception):
        save_model(path, model, replace(SPEC, sigma=0.5), {"callback": lambda: None})
    assert os.listdir(folder) == ["m.pt"]
    assert path.read_bytes() == before
    assert load_model(path, sigma=0.25)[1].sigma == 0.25
    # overwriting works and replaces the content
    save_model(path, model, replace(SPEC, sigma=0.5))
    assert os.listdir(folder) == ["m.pt"]
    assert load_model(path)[1].sigma == 0.5


def test_model_spec_builds_its_architecture():
    spec = replace(SPEC, arch="resnet20", in_channels=3, mean=(0.5,) * 3, std=(0.25,) * 3, num_classes=5)
    model = spec.build()
    assert isinstance(model[1], CifarResNet)
    assert model[1].fc.out_features == 5
    assert model[0].mean.flatten().tolist() == [0.5] * 3


def test_save_model_refuses_extra_that_cannot_be_loaded_back(tmp_path):
    model = build_model("small_cnn", 10, 1, (0.5,), (0.25,))
    spec = ModelSpec("small_cnn", "digits", 10, 1, (0.5,), (0.25,), 0.25, "gaussian", 0)
    with pytest.raises(TypeError, match="JSON"):
        save_model(tmp_path / "m.pt", model, spec, extra={"where": Path("/x")})
    assert list(tmp_path.iterdir()) == []


# --- networks of other codebases: TorchScript archives and builders ---------------------------------
def _mlp_spec(arch: str) -> ModelSpec:
    return replace(SPEC, arch=arch, mean=(0.3,), std=(0.4,), hparams={})


def test_a_torchscript_network_is_stored_whole_and_loaded_only_with_allow_code(tmp_path):
    """arch "torchscript": the archive is a uint8 tensor of the file (read weights-only), the state
    dict empty; load_model rebuilds Sequential(InputNormalization, the scripted network) with
    allow_code=True and refuses it with one line without."""
    from foreign_models import DigitsMLP

    from rslib.models.architectures import with_input_layer

    torch.manual_seed(1)
    net = DigitsMLP(hidden=16).eval()
    model = with_input_layer(torch.jit.script(net), (0.3,), (0.4,))
    path = tmp_path / "m.pt"
    save_model(path, model, _mlp_spec("torchscript"), {"imported": {"format": "torchscript"}})
    blob = read_checkpoint(path)  # weights-only
    assert blob["state_dict"] == {} and blob["torchscript"].dtype == torch.uint8
    with pytest.raises(CheckpointError) as refused:
        load_model(path)
    assert str(refused.value) == (
        f"{path} holds its network as a TorchScript archive, which torch runs as code when it loads it; load it "
        f"only if you trust its source: load_model(..., allow_code=True), or rslib certify --allow-code")
    loaded, spec, extra = load_model(path, dataset="digits", sigma=0.25, allow_code=True)
    assert spec.arch == "torchscript" and extra["imported"]["format"] == "torchscript"
    assert isinstance(loaded[1], torch.jit.ScriptModule) and loaded.rslib_spec == spec
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), net((x - 0.3) / 0.4))
    with pytest.raises(TypeError, match="arch 'torchscript' needs a TorchScript network"):
        save_model(tmp_path / "eager.pt", with_input_layer(net, (0.3,), (0.4,)), _mlp_spec("torchscript"))


def test_an_exported_network_is_stored_whole_and_loaded_only_with_allow_code(tmp_path):
    """arch "exported": the torch.export archive's bytes, unchanged, are the uint8 tensor "exported"
    (read weights-only); load_model rebuilds Sequential(InputNormalization, ExportedNetwork) with
    allow_code=True, in eval mode as far as the wrapper goes (torch refuses eval() on the graph)."""
    import io

    from foreign_models import DigitsMLP

    from rslib.models.architectures import with_input_layer
    from rslib.models.checkpoint import ExportedNetwork, load_exported

    torch.manual_seed(1)
    net = DigitsMLP(hidden=16).eval()
    archive = io.BytesIO()
    torch.export.save(torch.export.export(net, (torch.rand(2, 1, 8, 8),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)), archive)
    model = with_input_layer(load_exported(archive.getvalue(), "the test's archive"), (0.3,), (0.4,))
    path = tmp_path / "m.pt"
    save_model(path, model, _mlp_spec("exported"), {"imported": {"format": "exported"}})
    blob = read_checkpoint(path)  # weights-only
    assert blob["state_dict"] == {} and blob["exported"].numpy().tobytes() == archive.getvalue()
    with pytest.raises(CheckpointError, match=r"holds its network as a torch\.export archive, whose graph torch "
                                              r"rebuilds and runs when it loads it; load it only if you trust"):
        load_model(path)
    loaded, spec, _ = load_model(path, dataset="digits", sigma=0.25, allow_code=True)
    assert spec.arch == "exported" and isinstance(loaded[1], ExportedNetwork) and not loaded.training
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net((x - 0.3) / 0.4), rtol=1e-6, atol=1e-6)
    with pytest.raises(TypeError, match="arch 'exported' needs an ExportedNetwork"):
        save_model(tmp_path / "eager.pt", with_input_layer(net, (0.3,), (0.4,)), _mlp_spec("exported"))
    assert not (tmp_path / "eager.pt").exists()


def test_a_builder_network_is_rebuilt_by_importing_its_function(tmp_path):
    from foreign_models import DigitsMLP

    torch.manual_seed(2)
    spec = _mlp_spec("foreign_models:digits_mlp")
    model = spec.build().eval()
    assert isinstance(model[1], DigitsMLP) and isinstance(model[0], InputNormalization)
    path = tmp_path / "m.pt"
    save_model(path, model, spec)
    assert all(k.startswith("1.") for k in read_checkpoint(path)["state_dict"])
    with pytest.raises(CheckpointError, match=re.escape(
            f"{path} rebuilds its network by importing and calling 'foreign_models:digits_mlp'; load it only if "
            f"you trust its source")):
        load_model(path)
    loaded, _, _ = load_model(path, allow_code=True)
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("builder, message", [
    ("digits_mlp", "unknown architecture 'digits_mlp'; known: resnet110, resnet20, resnet26, resnet32, resnet50, "
                   "small_cnn, or a builder 'package.module:function'"),
    ("foreign models:x", "a network builder is named 'package.module:function', got 'foreign models:x'"),
    ("no_such_package.nets:f", "cannot import module 'no_such_package.nets' of the builder 'no_such_package.nets:f' "
                               "(No module named 'no_such_package'): install it, or add its folder to PYTHONPATH"),
    ("foreign_models:no_such", "module 'foreign_models' has no function 'no_such' (the builder 'foreign_models:no_such')"),
    ("foreign_models:torch", "module 'foreign_models' has no function 'torch' (the builder 'foreign_models:torch')"),
    ("math:pi", "module 'math' has no function 'pi' (the builder 'math:pi')"),
    ("builtins:dict", "the builder 'builtins:dict' returned a dict, not a torch.nn.Module"),
])
def test_builder_errors_are_one_line(builder, message):
    with pytest.raises(ValueError) as info:
        build_model(builder, 10, 1, (0.0,), (1.0,))
    assert str(info.value) == message
