"""The truncated MobileNetV2 of the cascade paper's Table I: 1.83 M parameters, one 64-d vector per crop."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# (expansion t, output channels c, repeats n, first stride s), as in Table I.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int, stride: int | tuple[int, int] = 1, groups: int = 1,
                 activation: type[nn.Module] = nn.ReLU6) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        activation(inplace=True),
    )


def conv3x3(in_ch: int, out_ch: int, stride: int | tuple[int, int] = 1) -> nn.Sequential:
    """The plain 3x3 convolution, batch norm and ReLU of the networks that keep positions (not Table I's)."""
    return conv_bn_relu(in_ch, out_ch, 3, stride, activation=nn.ReLU)


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_ch * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(conv_bn_relu(in_ch, hidden, 1))
        layers += [
            conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x) if self.use_residual else self.block(x)


class TruncatedMobileNetV2(nn.Module):
    """MobileNetV2 up to the 320-channel block, then a 1x1 projection to `out_dim` and global pooling.

    Table I opens with a 1x1 stride-2 convolution (that is what gives exactly 1,831,488 parameters). A 1x1 kernel
    at stride 2 reads only the even rows and columns, so the stride belongs to whoever samples the input: the
    network takes patches sampled at every `input_stride`-th pixel and its first convolution runs at stride 1.
    The outputs are the same; the crops need a quarter of the samples and the CPU is spared a slow strided
    one-channel convolution.
    """

    input_stride = 2

    def __init__(self, in_channels: int = 1, out_dim: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn_relu(in_channels, 32, 1)]
        channels = 32
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            for i in range(n):
                layers.append(InvertedResidual(channels, c, s if i == 0 else 1, t))
                channels = c
        layers.append(conv_bn_relu(channels, out_dim, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = out_dim
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.features(x)).flatten(1)


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every BatchNorm that follows a convolution into it, in place: same outputs in eval mode, ~15% faster."""
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                seq[i] = fuse_conv_bn_eval(seq[i].eval(), seq[i + 1].eval()).to(memory_format=torch.channels_last)
                seq[i + 1] = nn.Identity()
    return module
