"""The PyTorch peer: our FCN layer for layer as an nn.Module, trained eagerly on the CPU.

    build_model(plan)                      -> FCN nn.Module, logits [B, C, H, W]
    masked_loss(logits, labels, void)      -> scalar: mean cross entropy over non-void pixels
    TorchTrainer(spec, channels_last, ...) .step(images, labels) -> loss; precision fp32 or bf16
    parameter_groups(model)                {layer: trainable scalars}
    load_weights(model, weights)           weights {layer: {var: array}} in our variable names

Layers follow fcn_spec.layer_plan: Conv2d (padding k // 2 = TF's SAME for odd
k at stride 1), BatchNorm2d (our epsilon, momentum = 1 - our decay), ReLU,
MaxPool2d(2, 2), Dropout, and the bilinear transposed convolutions as
replicate-padding by one pixel (= TF's SYMMETRIC for one pixel) followed by
ConvTranspose2d(2f, stride f, padding 3f/2) whose ``padding`` crops exactly
what our explicit padding crops. The fixed final upsampling is
``F.interpolate(mode='bilinear', align_corners=False)``, the same linear map
as FCN's frozen bilinear deconvolution (and ours). SGD with momentum (torch's momentum
buffer update is TF1's MomentumOptimizer's), weight decay only on the
convolution kernels (the gradient of ``weight_decay * tf.nn.l2_loss``), and
PolynomialLR stepped once per step. Precision ``bf16`` is PyTorch's CPU
autocast (``torch.autocast('cpu', dtype=torch.bfloat16)``) around the forward
pass and the loss: convolutions in bfloat16, the ops on autocast's float32 list
(e.g. the cross entropy) in float32; the backward pass runs outside it, and the
weights and the optimizer stay float32. ``torch`` is an optional dependency
(``pip install -e '.[bench]'``); this module imports it at the top.
"""
import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fcn_tf1 import layers as our_layers

from . import fcn_spec


class ConvBlock(nn.Module):
    """Convolution (+ batch norm) (+ ReLU) of one fcn_spec.Conv."""

    def __init__(self, conv, plan):
        super().__init__()
        self.conv = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel,
                              padding=conv.kernel // 2, bias=conv.bias)
        if conv.zero_init:
            nn.init.zeros_(self.conv.weight)
        else:
            nn.init.kaiming_normal_(self.conv.weight, mode="fan_in", nonlinearity="relu")
        if conv.bias:
            nn.init.zeros_(self.conv.bias)
        self.bn = nn.BatchNorm2d(conv.out_channels, eps=plan.bn_epsilon,
                                 momentum=1.0 - plan.bn_decay) if conv.batch_norm else None
        self.relu = conv.relu

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class BilinearUpsample(nn.Module):
    """The learnable x ``factor`` bilinear transposed convolution, exactly fcn_tf1.layers'.

    (See the module doc; the fixed final upsampling is a resize, not this layer.)
    """

    def __init__(self, upsample):
        super().__init__()
        f = upsample.factor
        # ours: [2f, 2f, out, in]; torch's transposed convolution weight: [in, out, 2f, 2f]
        kernel = torch.from_numpy(
            our_layers.bilinear_kernel(f, upsample.channels).transpose(3, 2, 0, 1).copy())
        self.weight = nn.Parameter(kernel)
        self.factor = f

    def forward(self, x):
        padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
        return F.conv_transpose2d(padded, self.weight, stride=self.factor,
                                  padding=3 * self.factor // 2)


class FCN(nn.Module):
    """The network of a fcn_spec.Plan; input float32 [B, 3, H, W] RGB 0..255."""

    def __init__(self, plan):
        super().__init__()
        self.plan = plan
        self.register_buffer("mean", torch.tensor(plan.input_mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(plan.input_std).view(1, 3, 1, 1))
        self.blocks = nn.ModuleDict()
        for conv in fcn_spec.plan_convs(plan):
            self.blocks[conv.name] = ConvBlock(conv, plan)
        self.upsamples = nn.ModuleDict(
            {up.name: BilinearUpsample(up)
             for up in [f.upsample for f in plan.fusions]})
        self.dropout = nn.Dropout(plan.dropout_rate)

    def forward(self, images):
        x = images
        if self.plan.input_perm != (0, 1, 2):
            x = x[:, list(self.plan.input_perm)]
        x = (x - self.mean) / self.std
        endpoints = {}
        for s, stage in enumerate(self.plan.stages, 1):
            for conv in stage:
                x = self.blocks[conv.name](x)
            x = endpoints[f"pool{s}"] = F.max_pool2d(x, 2, 2)
        for conv in self.plan.fc:
            x = self.dropout(self.blocks[conv.name](x))
        score = self.blocks[self.plan.score_fr.name](x)
        for fusion in self.plan.fusions:
            score = (self.upsamples[fusion.upsample.name](score)
                     + self.blocks[fusion.score.name](endpoints[fusion.source]))
        return F.interpolate(score, scale_factor=self.plan.final.factor, mode="bilinear",
                             align_corners=False)


def build_model(plan):
    return FCN(plan)


def masked_loss(logits, labels, void_label):
    """Mean cross entropy over non-void pixels: void -> class 0 with weight 0; 0 if none valid."""
    valid = labels != void_label
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    per_pixel = F.cross_entropy(logits, safe, reduction="none")
    weights = valid.to(per_pixel.dtype)  # float32 under autocast too: exact pixel counts
    # divide_no_nan: without valid pixels the numerator is 0, so 0 / 1 = 0
    return (weights * per_pixel).sum() / weights.sum().clamp_min(1.0)


def is_decayed(name):
    """True for the parameters weight decay covers: the conv kernels, as in our graph."""
    return name.startswith("blocks.") and name.endswith(".conv.weight")


def make_optimizer(model, spec):
    """SGD with momentum, weight decay on the convolution kernels only, and its LR schedule."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if is_decayed(n)],
               "weight_decay": spec.weight_decay},
              {"params": [p for n, p in named if not is_decayed(n)], "weight_decay": 0.0}]
    optimizer = torch.optim.SGD(groups, lr=spec.learning_rate, momentum=spec.momentum)
    power = spec.poly_power if spec.lr_schedule == "poly" else 0.0
    schedule = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=spec.decay_steps,
                                                     power=power)
    return optimizer, schedule


class TorchTrainer:
    """The peer of one BenchSpec in training mode; ``channels_last`` picks the memory format,
    ``precision`` 'fp32' or 'bf16' (autocast, see the module docstring)."""

    def __init__(self, spec, channels_last, precision="fp32"):
        torch.manual_seed(spec.seed)
        self.spec = spec
        self.autocast = {"fp32": contextlib.nullcontext,
                         "bf16": lambda: torch.autocast("cpu", dtype=torch.bfloat16)}[precision]
        self.format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = build_model(fcn_spec.layer_plan(spec)).to(memory_format=self.format)
        self.model.train()
        self.optimizer, self.schedule = make_optimizer(self.model, spec)

    def step(self, images, labels):
        """One training step on numpy float32 [B, H, W, 3] and int64 [B, H, W]; returns the loss."""
        # NHWC numpy seen as NCHW is already channels_last; contiguous_format copies it
        x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(memory_format=self.format)
        y = torch.from_numpy(labels)
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss = masked_loss(self.model(x), y, self.spec.void_label)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        return float(loss.item())


def parameter_groups(model):
    """{layer name: trainable scalars} (``blocks.conv1_1.bn.weight`` counts under conv1_1)."""
    groups = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            layer = name.split(".")[1]
            groups[layer] = groups.get(layer, 0) + param.numel()
    return groups


def decayed_parameters(model):
    """Scalars under weight decay."""
    return sum(p.numel() for n, p in model.named_parameters() if is_decayed(n))


def load_weights(model, weights):
    """Sets the model's parameters and BN statistics from our variables (HWIO -> OIHW)."""
    with torch.no_grad():
        for name, ours in weights.items():
            if name in model.blocks:
                block = model.blocks[name]
                block.conv.weight.copy_(torch.from_numpy(np.transpose(ours["weights"], (3, 2, 0, 1))))
                if "biases" in ours:
                    block.conv.bias.copy_(torch.from_numpy(ours["biases"]))
                if block.bn is not None:
                    for theirs, key in (("weight", "gamma"), ("bias", "beta"),
                                        ("running_mean", "moving_mean"),
                                        ("running_var", "moving_variance")):
                        getattr(block.bn, theirs).copy_(torch.from_numpy(ours[key]))
            elif name in model.upsamples:
                model.upsamples[name].weight.copy_(
                    torch.from_numpy(np.transpose(ours["weights"], (3, 2, 0, 1))))
