"""The segmentation model: construction, device choice and weight (de)serialisation.

Three architectures, all returning ``model(x)["out"]``: logits (N, 1, H, W) at the input resolution,
all trained from random weights (nothing can be downloaded).

* ``unet_small``: a classic U-Net with plain 3x3 convolutions and 16-96 channels. Measured on the
  synthetic catalog (2 CPU cores, 192 px, batch 8, see benchmarks/_model_experiments.py):
  validation IoU 0.56 after 50 steps against 0.54 for LRASPP and 0.46 for the MobileNetV3 U-Net,
  but no better than LRASPP over a whole learning curve, so it is an option, not the default.
* ``unet_mobilenet_v3_large`` (what the nightly retraining bootstraps, ``TrainingConfig.architecture``):
  a MobileNetV3-Large encoder (torchvision) with a light U-Net decoder that merges skip
  connections at strides 16, 8, 4 and 2 and refines at full resolution. Slow to start, best
  given time: from scratch on 1,000 synthetic images (192 px, 2 CPU cores,
  benchmarks/training_speed.py) its gold IoU was 0.47 after 154 s (LRASPP: 0.55 after 104 s),
  0.80 after 803 s (LRASPP: 0.75) and 0.86 after 1,860 s, where LRASPP flattened out near 0.80.
* ``lraspp_mobilenet_v3_large`` (``build_model``'s default, and the demo's): torchvision's LRASPP,
  the original model. It predicts at stride 8 and upsamples, so 2-4 px jewellery chains dissolve
  (gold IoU 0.11 on jewellery after 300 steps, against 0.67-0.80 for the other categories). It is
  ahead in the first few minutes, which is all the demo's budget gives it.
  Registered models that carry no architecture name are LRASPP.
"""

from __future__ import annotations

import io

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import mobilenet_v3_large
from torchvision.models.segmentation import lraspp_mobilenet_v3_large
from torchvision.ops.misc import Conv2dNormActivation

from ml.architectures import ARCHITECTURES, LRASPP, UNET, UNET_SMALL  # noqa: F401 (ml.model's names too)
# What build_model() makes when no architecture is named: LRASPP, ahead in the first few minutes
# of training (the demo's and the tests' budgets). The nightly retraining's half-hour bootstrap
# builds UNET instead (TrainingConfig.architecture; see the docstring).
ARCHITECTURE = LRASPP
# Models registered before architectures were named were all LRASPP.
LEGACY_ARCHITECTURE = LRASPP


def _separable(in_channels: int, out_channels: int) -> nn.Sequential:
    """Depthwise 3x3 + pointwise 1x1, each with BatchNorm and ReLU: a 3x3 conv's reach at a fraction of its cost."""
    return nn.Sequential(
        Conv2dNormActivation(in_channels, in_channels, kernel_size=3, groups=in_channels, activation_layer=nn.ReLU),
        Conv2dNormActivation(in_channels, out_channels, kernel_size=1, activation_layer=nn.ReLU),
    )


class _UpBlock(nn.Module):
    """Upsample to the skip's resolution, concatenate, and mix with two separable convolutions."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.mix = nn.Sequential(_separable(in_channels + skip_channels, out_channels), _separable(out_channels, out_channels))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.mix(torch.cat([x, skip], dim=1))


class UNetMobileNetV3(nn.Module):
    """MobileNetV3-Large encoder with a U-Net decoder and a full-resolution refinement; one logit per pixel."""

    # Indices into mobilenet_v3_large().features whose outputs feed the decoder, with their channels:
    # stride 2 (16), 4 (24), 8 (40), 16 (112) and the stride-32 bottom (160). The final 960-channel
    # 1x1 conv is a classifier's neck and is dropped.
    TAPS = (1, 3, 6, 12, 15)
    TAP_CHANNELS = (16, 24, 40, 112, 160)
    DECODER_CHANNELS = (16, 24, 40, 64)  # output channels at strides 2, 4, 8, 16

    def __init__(self, num_classes: int = 1) -> None:
        super().__init__()
        features = mobilenet_v3_large(weights=None).features
        self.encoder = nn.ModuleList(features[: self.TAPS[-1] + 1])
        # Global context at the bottom (as LRASPP's pooled branch does): a gate from the image-wide mean.
        bottom = self.TAP_CHANNELS[-1]
        self.context = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(bottom, bottom, 1), nn.Sigmoid())
        ups = []
        in_channels = bottom
        for skip_channels, out_channels in reversed(list(zip(self.TAP_CHANNELS[:-1], self.DECODER_CHANNELS))):
            ups.append(_UpBlock(in_channels, skip_channels, out_channels))
            in_channels = out_channels
        self.decoder = nn.ModuleList(ups)
        # Full resolution: a few channels straight from the pixels, so edges land where the image has them.
        self.stem = Conv2dNormActivation(3, 8, kernel_size=3, activation_layer=nn.ReLU)
        self.refine = _separable(in_channels + 8, 16)
        self.head = nn.Conv2d(16, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        skips = []
        y = x
        taps = set(self.TAPS)
        for index, layer in enumerate(self.encoder):
            y = layer(y)
            if index in taps:
                skips.append(y)
        y = skips.pop()
        y = y * self.context(y)
        for block in self.decoder:
            y = block(y, skips.pop())
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        y = self.refine(torch.cat([y, self.stem(x)], dim=1))
        return {"out": self.head(y)}


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        Conv2dNormActivation(in_channels, out_channels, kernel_size=3, activation_layer=nn.ReLU),
        Conv2dNormActivation(out_channels, out_channels, kernel_size=3, activation_layer=nn.ReLU),
    )


class SmallUNet(nn.Module):
    """A classic U-Net (Ronneberger et al.) with plain 3x3 convolutions and few channels.

    Dense convolutions converge in a few hundred steps from random weights, where MobileNetV3's
    depthwise, squeeze-excite blocks need thousands; every level keeps a skip, so edges and
    2-4 px chains are predicted at full input resolution.
    """

    CHANNELS = (16, 32, 48, 64, 96)

    def __init__(self, num_classes: int = 1) -> None:
        super().__init__()
        channels = self.CHANNELS
        self.down = nn.ModuleList()
        previous = 3
        for width in channels:
            self.down.append(_double_conv(previous, width))
            previous = width
        self.up = nn.ModuleList(_double_conv(channels[i + 1] + channels[i], channels[i]) for i in reversed(range(len(channels) - 1)))
        self.context = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels[-1], channels[-1], 1), nn.Sigmoid())
        self.head = nn.Conv2d(channels[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        skips = []
        y = x
        for index, block in enumerate(self.down):
            if index:
                y = F.max_pool2d(y, 2, ceil_mode=True)
            y = block(y)
            skips.append(y)
        y = skips.pop()
        y = y * self.context(y)
        for block in self.up:
            skip = skips.pop()
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, skip], dim=1))
        return {"out": self.head(y)}


def build_model(bn_momentum: float = 0.1, architecture: str | None = None) -> torch.nn.Module:
    """A randomly initialised segmentation network with one foreground logit per pixel.

    The output is ``model(x)["out"]``: logits of shape (N, 1, H, W) at the input resolution. The
    architecture's name is kept on the module as ``model.architecture`` so it can be logged with it.
    """
    architecture = architecture or ARCHITECTURE
    # Nothing can be downloaded at run time, so there are never pretrained weights.
    if architecture == LRASPP:
        model = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=1)
    elif architecture == UNET:
        model = UNetMobileNetV3(num_classes=1)
    elif architecture == UNET_SMALL:
        model = SmallUNet(num_classes=1)
    else:
        raise ValueError(f"unknown architecture {architecture!r}; expected one of {ARCHITECTURES}")
    # torchvision's backbone uses momentum 0.01, which is tuned for fine-tuning pretrained
    # weights; from scratch the running statistics lag the fast-moving weights so badly that
    # eval-mode IoU stays at 0 for hundreds of steps (measured, see DESIGN "ML notes").
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = bn_momentum
    model.architecture = architecture
    return model


def architecture_of(model: torch.nn.Module) -> str:
    """The architecture name a model was built with (LRASPP for modules that predate the attribute)."""
    return getattr(model, "architecture", None) or LEGACY_ARCHITECTURE


def architecture_from_state(state: dict[str, torch.Tensor]) -> str:
    """Tell the architecture from a state dict's keys: LRASPP's start with ``backbone.``/``classifier.``."""
    if any(key.startswith("decoder.") for key in state):
        return UNET
    if any(key.startswith("down.") for key in state):
        return UNET_SMALL
    return LRASPP


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


def load_model_bytes(data: bytes, device: str | torch.device = "cpu", architecture: str | None = None) -> torch.nn.Module:
    """Build the architecture and load weights saved by ``state_dict_bytes``; returns it in eval mode.

    ``architecture`` is the name recorded with the model; when absent (models registered before
    names were recorded) it is read from the state dict's keys, which tells LRASPP from the U-Net.
    """
    # weights_only=True refuses arbitrary pickled objects: model bytes may come from a
    # registry or object store that someone else can write to.
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    model = build_model(architecture=architecture or architecture_from_state(state))
    model.load_state_dict(state)
    return model.to(torch.device(device)).eval()
