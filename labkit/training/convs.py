"""Convolutions as labkit trains them: torchvision's ResNets with window convolutions, which skip the taps of a
kernel that only ever meet padding (see :class:`WindowConv2d`)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


class WindowConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` that, on the CPU, where one kernel window covers its whole input and gives its only output
    (a 3x3 convolution on a 1x1 map: the 3x3 convolutions of a ResNet's layer4 on 32-px images, of layer3 too at
    16 px), convolves with just the taps that touch the input.

    It is the same convolution: the other taps multiply padding zeros, in the output and in the gradients. But
    on CPUs without AVX-512, oneDNN computes the weight gradient of a padded 1x1 map as a generic matrix product
    over all nine taps: about 90 ms for each of layer4's 512-channel convolutions at batch 128 on one core, half
    of a 32-px ResNet-18 training step, against a few ms for the one tap that counts (``make bench`` measures
    the ratio). GPUs, and graphs traced by torch.fx (torchvision's feature extractor), keep torch's own."""

    def _conv_forward(self, input, weight, bias):
        taps = None
        if not isinstance(input, torch.fx.Proxy) and input.device.type == "cpu":
            taps = self.window_taps(tuple(input.shape[-2:]))
        if taps is None:
            return super()._conv_forward(input, weight, bias)
        return F.conv2d(input, weight[(slice(None), slice(None), *taps)], bias, groups=self.groups)  # no padding

    def window_taps(self, size: tuple[int, int]) -> tuple[slice, slice] | None:
        """The kernel's rows and columns that touch an input of ``size``, where one window covers it all and gives
        the only output; None where the whole kernel is needed (or used anyway)."""
        # left to torch: padding by name ("same"), one value for both sides ((1,)), other padding modes, dilation
        if isinstance(self.padding, str) or len(self.stride) != 2 or len(self.padding) != 2 or \
                self.padding_mode != "zeros" or self.dilation != (1, 1):
            return None
        taps = []
        for n, k, s, p in zip(size, self.kernel_size, self.stride, self.padding):
            if not 0 <= n + 2 * p - k < s or p + n > k:  # several outputs, or input outside the one window
                return None
            taps.append(slice(p, p + n))
        return None if all(t == slice(0, k) for t, k in zip(taps, self.kernel_size)) else tuple(taps)


def window_convs(model: nn.Module) -> nn.Module:
    """Every plain ``nn.Conv2d`` of ``model`` made a :class:`WindowConv2d`, in place: the same parameters, state
    dict and results (the optimizer's references stay valid). Returns ``model``."""
    for module in model.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = WindowConv2d
    return model


def plain_convs(model: nn.Module) -> nn.Module:
    """The reverse of :func:`window_convs` (for benchmarks: torch's own convolution, measured in the same run)."""
    for module in model.modules():
        if type(module) is WindowConv2d:
            module.__class__ = nn.Conv2d
    return model


def torchvision_resnet(arch: str, **kwargs) -> nn.Module:
    """torchvision's ResNet ``arch`` (``kwargs`` to its builder), with window convolutions."""
    return window_convs(getattr(torchvision.models, arch)(**kwargs))
