"""The segmentation model: construction, device choice and weight (de)serialisation."""

from __future__ import annotations

import io

import torch
from torchvision.models.segmentation import lraspp_mobilenet_v3_large

ARCHITECTURE = "lraspp_mobilenet_v3_large"


def build_model(bn_momentum: float = 0.1) -> torch.nn.Module:
    """LRASPP-MobileNetV3-Large with one foreground logit per pixel, randomly initialised.

    The output is ``model(x)["out"]``: logits of shape (N, 1, H, W) at the input resolution.
    """
    # Nothing can be downloaded at run time, so there are never pretrained weights.
    model = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=1)
    # torchvision's backbone uses momentum 0.01, which is tuned for fine-tuning pretrained
    # weights; from scratch the running statistics lag the fast-moving weights so badly that
    # eval-mode IoU stays at 0 for hundreds of steps (measured, see DESIGN "ML notes").
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = bn_momentum
    return model


def select_device(prefer: str = "auto") -> torch.device:
    """Resolve a device name: "auto" picks CUDA when available, else CPU; others are taken as given."""
    if prefer == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(prefer)
    if device.type == "cuda" and not torch.cuda.is_available():
        # Failing here names the cause; failing later inside .to() does not.
        raise RuntimeError(f"device {prefer!r} requested but CUDA is not available")
    return device


def state_dict_bytes(model: torch.nn.Module) -> bytes:
    """Serialise the model's state dict (tensors only, no pickled code) to bytes."""
    buffer = io.BytesIO()
    # CPU tensors keep the bytes loadable on machines without the training device.
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    torch.save(state, buffer)
    return buffer.getvalue()


def load_model_bytes(data: bytes, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Build the architecture and load weights saved by ``state_dict_bytes``; returns it in eval mode."""
    # weights_only=True refuses arbitrary pickled objects: model bytes may come from a
    # registry or object store that someone else can write to.
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    model = build_model()
    model.load_state_dict(state)
    return model.to(torch.device(device)).eval()
