"""What is benchmarked: one FCN training setup, and its layer plan shared by every framework.

    BenchSpec(label, config, image_size) a RunConfig (model, batch, optimizer, loss) + image size
    make_spec(label, batch, size, ...)   the BenchSpec of RunConfig's defaults at that size
    layer_plan(spec)                     -> Plan: the layers of fcn_tf1.model, in order
    training_conv_flops(plan, b, h, w)   analytic FLOPs of the convolutions of one step

The plan is read off ``fcn_tf1.model`` / ``fcn_tf1.layers`` (their constants,
not copies), so the Keras and PyTorch peers (peers_keras.py, peers_torch.py)
build exactly the layers our graph builds:

* input: RGB 0..255 -> channels permuted (vgg16: RGB -> BGR), minus a mean,
  divided by a std (1 for vgg16);
* stages of stride-1 SAME convolutions (compact: no bias, batch norm, ReLU;
  vgg16: bias, ReLU), each stage ending in 2x2/2 max pooling;
* fc6 and fc7: convolution (+ batch norm for compact) + ReLU + dropout;
* 1x1 score layers with bias, zero-initialised (score_fr on fc7, score_pool4
  on pool4, score_pool3 on pool3, score_pool2 on pool2: model.SKIP_POOLS);
* fusions: a learnable 2x transposed convolution initialised to bilinear
  interpolation (no bias), plus the next score layer;
* the final fixed bilinear upsampling (4x, 8x, 16x or 32x; a resize, not a convolution).

Every transposed convolution pads its input by one edge-replicated pixel and
crops 1.5 * factor pixels from each side of its full output (fcn_tf1.layers).
L2 weight decay covers exactly the convolution kernels (``weights``), score
layers included, never the upsampling kernels (``model.weight_decay_loss``).
Image sizes must be multiples of 32: our graph pads other sizes, the peers do
not implement that padding.
"""
import collections
import dataclasses

from fcn_tf1 import layers, model

Conv = collections.namedtuple(
    "Conv", ["name", "in_channels", "out_channels", "kernel", "bias", "batch_norm", "relu",
             "zero_init", "stride_in"])
Conv.__doc__ = """A stride-1 SAME convolution; ``stride_in``: the map's stride w.r.t. the input."""

Upsample = collections.namedtuple(
    "Upsample", ["name", "channels", "factor", "learnable", "stride_in"])
Upsample.__doc__ = """A bilinear transposed convolution from stride ``stride_in`` to stride_in / factor."""

Fusion = collections.namedtuple("Fusion", ["upsample", "score", "source"])
Fusion.__doc__ = """score = upsample(score) + score_layer(endpoint ``source``), e.g. pool4."""

Plan = collections.namedtuple(
    "Plan", ["input_perm", "input_mean", "input_std", "stages", "fc", "dropout_rate",
             "score_fr", "fusions", "final", "bn_epsilon", "bn_decay", "num_classes"])
Plan.__doc__ = """The whole network: preprocessing, stages (tuples of Conv), fc (Conv, Conv),
fusions (tuple of Fusion) and the final fixed Upsample."""


DECAY_STEPS = 100000  # the poly schedule's horizon: the rate never reaches 0 while benchmarking


@dataclasses.dataclass(frozen=True)
class BenchSpec:
    """One benchmarked setup: a RunConfig (model, batch size, optimizer, schedule, loss) and
    the image size. Every RunConfig field reads through (``spec.learning_rate``);
    ``config.max_steps`` is the poly schedule's horizon (``decay_steps``).
    Sent to the worker processes as JSON (:meth:`to_dict` / :meth:`from_dict`).
    """
    label: str
    config: "object"  # fcn_tf1.config.RunConfig
    image_size: int

    def __post_init__(self):
        problems = []
        if self.image_size % model.STRIDE:
            problems.append(f"image_size {self.image_size} is not a multiple of {model.STRIDE}")
        if self.config.optimizer != "momentum":
            problems.append("the peers implement the momentum optimizer only")
        if self.config.lr_schedule not in ("poly", "constant"):
            problems.append("the peers implement the poly and constant schedules only")
        if self.config.class_weights is not None:
            problems.append("the peers implement the unweighted loss only")
        if problems:
            raise ValueError(f"{self.label}: " + "; ".join(problems))

    def __getattr__(self, name):  # only for names that are not fields: the config's
        if name == "config":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.config, name)

    @property
    def decay_steps(self):
        return self.config.max_steps

    def to_dict(self):
        return {"label": self.label, "config": self.config.to_dict(),
                "image_size": self.image_size}

    @classmethod
    def from_dict(cls, values):
        from fcn_tf1 import config as config_lib
        return cls(values["label"], config_lib.from_dict(values["config"], "bench spec"),
                   values["image_size"])

    def replace(self, **config_changes):
        """This spec with RunConfig fields changed (e.g. loss_variant='reshape_free')."""
        return dataclasses.replace(self, config=self.config.replace(**config_changes))

    def run_config(self, data):
        """The fcn_tf1 RunConfig of this setup reading ``data``."""
        return self.config.replace(data=str(data))


def make_spec(label, batch_size, image_size, **config_changes):
    """The BenchSpec of RunConfig's defaults (changed by ``config_changes``) at ``batch_size``
    full ``image_size`` images (no crop), with the DECAY_STEPS schedule horizon."""
    from fcn_tf1.config import RunConfig
    config = RunConfig(batch_size=batch_size, crop_size=None, max_steps=DECAY_STEPS,
                       **config_changes)
    return BenchSpec(label, config, image_size)


def _backbone_stages(spec):
    """Conv stages as ((name, out_channels), ...) per stage, and the fc channels and kernel."""
    if spec.backbone == "vgg16":
        stages = [[(f"conv{s}_{i}", c) for i, c in enumerate(channels, 1)]
                  for s, channels in enumerate(model.VGG16_STAGES, 1)]
        return stages, model.VGG16_FC_CHANNELS, 7
    stages = [[(f"conv{s}_{i}", mult * spec.width) for i in range(1, convs + 1)]
              for s, (convs, mult) in enumerate(
                  zip(model.CONVS_PER_STAGE[spec.backbone], model.COMPACT_STAGE_MULTIPLIERS), 1)]
    return stages, model.COMPACT_FC_MULTIPLIER * spec.width, 3


def layer_plan(spec):
    """The Plan of ``spec``'s network (see the module docstring)."""
    compact = spec.backbone != "vgg16"  # batch norm, no conv bias
    conv = dict(bias=not compact, batch_norm=compact, relu=True, zero_init=False)
    stage_specs, fc_channels, fc_kernel = _backbone_stages(spec)
    stages, channels, stride = [], 3, 1
    pool_channels = {}
    for s, convs in enumerate(stage_specs, 1):
        stage = []
        for name, out in convs:
            stage.append(Conv(name, channels, out, 3, stride_in=stride, **conv))
            channels = out
        stages.append(tuple(stage))
        stride *= 2
        pool_channels[f"pool{s}"] = channels
    fc = (Conv("fc6", channels, fc_channels, fc_kernel, stride_in=stride, **conv),
          Conv("fc7", fc_channels, fc_channels, 1, stride_in=stride, **conv))
    c = spec.num_classes

    def score(name, source_channels, source_stride):
        return Conv(name, source_channels, c, 1, bias=True, batch_norm=False, relu=False,
                    zero_init=True, stride_in=source_stride)

    fusions = []
    for source, up_name in model.skips(spec.variant):
        fusions.append(Fusion(Upsample(up_name, c, 2, True, stride),
                              score(f"score_{source}", pool_channels[source], stride // 2),
                              source))
        stride //= 2
    if compact:
        perm, mean, std = (0, 1, 2), model.IMAGENET_MEAN_RGB, model.IMAGENET_STD_RGB
    else:
        perm, mean, std = (2, 1, 0), model.VGG16_MEAN_BGR, (1.0, 1.0, 1.0)
    return Plan(input_perm=perm, input_mean=tuple(mean), input_std=tuple(std),
                stages=tuple(stages), fc=fc, dropout_rate=model.DROPOUT_RATE[spec.backbone],
                score_fr=score("score_fr", fc_channels, model.STRIDE), fusions=tuple(fusions),
                final=Upsample("upscore", c, stride, False, stride),
                bn_epsilon=layers.BN_EPSILON, bn_decay=layers.BN_DECAY, num_classes=c)


def plan_convs(plan):
    """Every Conv of the plan in graph order (backbone, fc, score layers)."""
    convs = [c for stage in plan.stages for c in stage] + list(plan.fc) + [plan.score_fr]
    return convs + [f.score for f in plan.fusions]


def training_conv_flops(plan, batch, height, width):
    """FLOPs (2 per multiply-add) of the convolutions of one training step, counted analytically.

    Convolutions: forward, filter gradient, input gradient (not for the first
    layer: nothing below it is trained). The learnable transposed convolutions
    (on the input padded by one pixel per side): forward, input gradient and
    filter gradient. The final fixed bilinear upsampling is not a convolution
    in any of the three implementations (ours: ScaleAndTranslate, Keras:
    UpSampling2D, PyTorch: F.interpolate; 4 multiply-adds per output value,
    under 1 % of a step) and is not counted. Counted like TensorFlow's op
    statistics, so the sum must equal the profiler's Conv2D* float_ops of the step.

    Returns:
        dict: ``forward``, ``backward`` and ``total`` (int).
    """
    pixels = batch * height * width
    forward = backward = 0
    first = plan.stages[0][0].name
    for conv in plan_convs(plan):
        flops = 2 * pixels // conv.stride_in ** 2 * conv.kernel ** 2 * conv.in_channels \
            * conv.out_channels
        forward += flops
        backward += flops if conv.name == first else 2 * flops
    for up in [f.upsample for f in plan.fusions]:
        h, w = height // up.stride_in, width // up.stride_in
        taps = 4 * up.channels * up.channels  # (2f / f)^2 taps per output and channel pair
        out_flops = 2 * batch * (h * up.factor) * (w * up.factor) * taps
        forward += out_flops
        backward += 2 * batch * (h + 2) * (w + 2) * up.factor ** 2 * taps  # input gradient
        backward += out_flops  # filter gradient
    return {"forward": forward, "backward": backward, "total": forward + backward}
