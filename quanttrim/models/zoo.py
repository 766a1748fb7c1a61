"""Registrations of the zoo's models (each module defines, this one names)."""
from __future__ import annotations

from quanttrim.models import register_model
from quanttrim.models import resnet

register_model("resnet20", description="CIFAR-style ResNet-20 (16/32/64 channels, 0.27 M params)")(resnet.resnet20)
register_model("resnet18", description="ResNet-18 (CIFAR stem below 64 px input)")(resnet.resnet18)
register_model("resnet50", description="ResNet-50 bottleneck (CIFAR stem below 64 px input)")(resnet.resnet50)

from quanttrim.models import mobilenet, segnet, vit  # noqa: E402

register_model("mobilenetv2", description="MobileNetV2 (--width multiplier; stride-1 stem below 96 px)")(mobilenet.mobilenetv2)
register_model("mobilenetv3_small", description="MobileNetV3-Small (hardswish, SE; stride-1 stem below 96 px)")(
    mobilenet.mobilenetv3_small)
register_model("vit_small", description="small DINOv2-style ViT (dim 192, depth 6, 3 heads, LayerScale)")(vit.vit_small)
register_model("unet_small", task="segmentation", description="small U-Net, per-pixel logits")(segnet.unet_small)
