"""Registrations of the zoo's models (each module defines, this one names)."""
from __future__ import annotations

from quanttrim.models import register_model
from quanttrim.models import resnet

register_model("resnet20", description="CIFAR-style ResNet-20 (16/32/64 channels, 0.27 M params)")(resnet.resnet20)
register_model("resnet18", description="ResNet-18 (CIFAR stem below 64 px input)")(resnet.resnet18)
register_model("resnet50", description="ResNet-50 bottleneck (CIFAR stem below 64 px input)")(resnet.resnet50)
