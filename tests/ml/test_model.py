"""Model construction, device choice and safe weight (de)serialisation."""

from __future__ import annotations

import io
import pickle

import pytest
import torch

from ml.model import (
    ARCHITECTURE,
    ARCHITECTURES,
    LRASPP,
    UNET,
    UNET_SMALL,
    architecture_of,
    build_model,
    load_model_bytes,
    select_device,
    state_dict_bytes,
)


def _batchnorms(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def test_architecture_names():
    # Registered models predating architecture names are LRASPP; that name must never change.
    assert LRASPP == "lraspp_mobilenet_v3_large"
    assert ARCHITECTURE in ARCHITECTURES and set(ARCHITECTURES) == {UNET, LRASPP, UNET_SMALL}
    assert architecture_of(build_model()) == ARCHITECTURE
    assert architecture_of(build_model(architecture=LRASPP)) == LRASPP
    assert architecture_of(torch.nn.Conv2d(1, 1, 1)) == LRASPP
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model(architecture="resnet9000")


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("size", [64, 72])
def test_output_is_one_logit_per_pixel_at_input_size(architecture, size):
    torch.manual_seed(0)
    model = build_model(architecture=architecture).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 3, size, size))["out"]
    assert out.shape == (2, 1, size, size)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_batchnorm_uses_the_requested_momentum(architecture):
    assert {m.momentum for m in _batchnorms(build_model(architecture=architecture))} == {0.1}
    assert {m.momentum for m in _batchnorms(build_model(bn_momentum=0.05, architecture=architecture))} == {0.05}
    # The MobileNetV3 backbone alone has dozens; a missed layer would leave part of the net at 0.01.
    assert len(_batchnorms(build_model(architecture=architecture))) > (30 if architecture != UNET_SMALL else 15)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_loading_builds_the_architecture_the_weights_belong_to(architecture):
    data = state_dict_bytes(build_model(architecture=architecture))
    # Named explicitly (a registry tag), and inferred from the keys (versions logged without one).
    assert architecture_of(load_model_bytes(data, architecture=architecture)) == architecture
    assert architecture_of(load_model_bytes(data)) == architecture
    other = LRASPP if architecture != LRASPP else UNET
    with pytest.raises(RuntimeError):
        load_model_bytes(data, architecture=other)


def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            select_device("cuda")


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_state_dict_round_trip_gives_identical_outputs(architecture):
    torch.manual_seed(0)
    model = build_model(architecture=architecture)
    # A couple of train-mode passes move the BN running stats away from their defaults, so
    # the round trip must carry buffers, not just parameters.
    with torch.no_grad():
        model.train()
        model(torch.randn(4, 3, 64, 64))
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected = model(x)["out"]

    restored = load_model_bytes(state_dict_bytes(model))
    assert not restored.training
    with torch.inference_mode():
        assert torch.equal(restored(x)["out"], expected)
    # fine-tuning starts from loaded weights: they train like a freshly built model's (trainable
    # weights, the BatchNorm momentum set)
    assert all(p.requires_grad for p in restored.parameters())
    assert {bn.momentum for bn in _batchnorms(restored)} == {0.1}
    restored.train()
    restored(torch.randn(2, 3, 64, 64))["out"].mean().backward()
    assert all(p.grad is not None for p in restored.parameters() if p.requires_grad)


def test_loading_uses_weights_only(monkeypatch):
    data = state_dict_bytes(build_model())
    seen = {}
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_model_bytes(data)
    assert seen.get("weights_only") is True


class _Payload:
    """Stands in for a pickled object someone slipped into a model file."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_loading_refuses_arbitrary_pickles():
    buffer = io.BytesIO()
    torch.save({"payload": _Payload()}, buffer)
    with pytest.raises(pickle.UnpicklingError):
        load_model_bytes(buffer.getvalue())


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_inference_model_folds_every_batchnorm_and_predicts_the_same(architecture):
    """ai_outputs runs a copy with BatchNorm folded into the convolutions: no BatchNorm left, the same logits, the original untouched."""
    from ml.infer import inference_model

    torch.manual_seed(0)
    model = build_model(architecture=architecture)
    model.train()
    with torch.no_grad():  # running statistics far from the initial 0 / 1, so that folding has something to fold
        for _ in range(3):
            model(torch.rand(2, 3, 64, 64) * 3.0 + 1.0)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = inference_model(model)
    assert _batchnorms(folded) == [] and len(_batchnorms(model)) > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original can still be fine-tuned
    assert not folded.training
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        expected, got = model(x)["out"], folded(x)["out"]
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_inference_model_in_place_folds_the_model_itself():
    """ai_outputs folds the champion it loaded in place (no copy): the same module, the same logits as a folded copy."""
    from ml.infer import inference_model

    torch.manual_seed(0)
    model = build_model(architecture=UNET)
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 3, 64, 64) * 3.0 + 1.0)
    model.eval()
    copied = inference_model(model)
    folded = inference_model(model, inplace=True)
    assert folded is model and _batchnorms(model) == []
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(folded(x)["out"], copied(x)["out"])
