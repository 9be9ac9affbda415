"""The peers are our network: parameters, output shapes, logits, loss and weight decay checked equal.

    ours_reference(spec)                 our graph with random weights: counts, logits, weights
    check_peer(framework, reference)     one peer ('keras' / 'torch') against it -> dict
    check_architectures(spec, frameworks)  all of them; raises ArchitectureMismatch
    python -m bench.arch_check [--backbone B] [--variant V] [--size S] [--batch N]
                               [--frameworks keras,torch]     prints the report as JSON

How: our inference graph is built for ``spec`` and every variable, score
layers and batch-norm statistics included, is set to seeded random values
(zero score layers would make every logit 0 and prove nothing). The same
values are loaded into each peer, which must then have

* the same trainable parameters, layer by layer (a conv's batch norm counts
  with the conv);
* the same output shape (PyTorch's NCHW compared as NHWC);
* the same logits in inference mode (batch norm on its moving statistics, no
  dropout) up to float32 rounding: max |difference| <= 1e-3 of max |logit|;
* the same weight-decay term (so the same kernels are decayed) and the same
  masked loss on those logits and labels with void pixels.
"""
import argparse
import json
import sys

import numpy as np

from . import fcn_spec

LOGIT_TOLERANCE = 1e-3  # of max |logit|: float32, different convolution algorithms
LOSS_TOLERANCE = 1e-5  # relative


class ArchitectureMismatch(AssertionError):
    pass


def _random_value(name, shape, rng):
    if name in ("gamma", "moving_variance"):
        return rng.uniform(0.5, 1.5, shape)
    if name in ("beta", "biases", "moving_mean"):
        return rng.normal(0.0, 0.1, shape)
    fan_in = int(np.prod(shape[:-1]))  # kernels: [k, k, in, out]
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)


def ours_reference(spec, seed=0):
    """Builds our inference graph for ``spec`` with random weights and runs it once.

    Returns:
        dict: ``groups`` {layer: trainable scalars}, ``logits`` float32 NHWC,
        ``images``, ``labels`` (with void), ``weights`` {layer: {name: array}},
        ``weight_decay`` (weight_decay * model.weight_decay_loss()), ``loss``
        {variant: losses.loss on the logits}, ``spec``.
    """
    import tensorflow as tf
    from fcn_tf1 import losses, model
    from .ours_graph import weights_by_layer
    tf1 = tf.compat.v1
    rng = np.random.default_rng(seed)
    shape = (spec.batch_size, spec.image_size, spec.image_size)
    images = rng.uniform(0, 255, shape + (3,)).astype(np.float32)
    labels = rng.integers(0, spec.num_classes, shape)
    labels[rng.random(shape) < 0.2] = spec.void_label
    with tf.Graph().as_default():
        tf1.set_random_seed(spec.seed)
        logits = model.inference(tf.constant(images), spec.num_classes, spec.variant,
                                 spec.backbone, spec.width, is_training=False)
        decay = spec.weight_decay * model.weight_decay_loss()
        variables = tf1.global_variables("fcn/")
        assigns = [v.assign(_random_value(v.op.name.rsplit("/", 1)[1], v.shape.as_list(), rng)
                            .astype(np.float32)) for v in variables if v.dtype == tf.float32]
        loss_in = tf1.placeholder(tf.float32, logits.shape)
        loss_of = {variant: losses.loss(loss_in, labels, spec.num_classes, spec.void_label,
                                        variant=variant) for variant in losses.VARIANTS}
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            session.run(assigns)
            logits_value, decay_value = session.run([logits, decay])
            loss_values = session.run(loss_of, {loss_in: logits_value})
            weights = weights_by_layer(session)
        groups = {}
        for v in tf1.trainable_variables("fcn/"):
            layer = v.op.name.split("/")[1]
            groups[layer] = groups.get(layer, 0) + int(np.prod(v.shape.as_list()))
    return {"spec": spec, "images": images, "labels": labels, "logits": logits_value,
            "weights": weights, "groups": groups, "weight_decay": float(decay_value),
            "loss": {k: float(v) for k, v in loss_values.items()}}


def _keras_outputs(reference):
    import keras
    from . import peers_keras
    spec = reference["spec"]
    net = peers_keras.build_model(fcn_spec.layer_plan(spec), spec.image_size, spec.weight_decay)
    peers_keras.load_weights(net, reference["weights"])
    logits = keras.ops.convert_to_numpy(net(reference["images"], training=False))
    loss = peers_keras.masked_loss(spec.void_label)(
        reference["labels"].astype(np.float32), reference["logits"])
    decay = sum(float(keras.ops.convert_to_numpy(term)) for term in net.losses)
    return (peers_keras.parameter_groups(net), logits, decay,
            float(keras.ops.convert_to_numpy(loss)))


def _torch_outputs(reference):
    import torch
    from . import peers_torch
    spec = reference["spec"]
    net = peers_torch.build_model(fcn_spec.layer_plan(spec))
    peers_torch.load_weights(net, reference["weights"])
    net.eval()
    with torch.no_grad():
        x = torch.from_numpy(reference["images"]).permute(0, 3, 1, 2)
        logits = net(x).permute(0, 2, 3, 1).numpy()
        decay = sum(float((p.double() ** 2).sum()) for n, p in net.named_parameters()
                    if peers_torch.is_decayed(n)) * spec.weight_decay / 2
        loss = peers_torch.masked_loss(
            torch.from_numpy(reference["logits"]).permute(0, 3, 1, 2),
            torch.from_numpy(reference["labels"]), spec.void_label)
    return peers_torch.parameter_groups(net), logits, decay, float(loss)


def check_peer(framework, reference):
    """Compares one peer with ``reference`` (from :func:`ours_reference`).

    Returns:
        dict: ``parameters``, ``groups``, ``output_shape`` (NHWC),
        ``max_rel_logit_diff``, ``weight_decay``, ``loss`` and ``problems``
        (a list of str, empty when the peer matches).
    """
    outputs = {"keras": _keras_outputs, "torch": _torch_outputs}[framework](reference)
    groups, logits, decay, loss = outputs
    ours_logits = reference["logits"]
    scale = float(np.max(np.abs(ours_logits))) or 1.0
    rel_diff = (float(np.max(np.abs(logits - ours_logits))) / scale
                if logits.shape == ours_logits.shape else float("inf"))
    problems = []
    if groups != reference["groups"]:
        differ = sorted(k for k in set(groups) | set(reference["groups"])
                        if groups.get(k) != reference["groups"].get(k))
        problems.append(f"parameters differ in {', '.join(differ)}: ours "
                        f"{[reference['groups'].get(k) for k in differ]}, "
                        f"{framework} {[groups.get(k) for k in differ]}")
    if logits.shape != ours_logits.shape:
        problems.append(f"output shape {list(logits.shape)} != ours {list(ours_logits.shape)}")
    elif rel_diff > LOGIT_TOLERANCE:
        problems.append(f"logits differ: max |diff| = {rel_diff:.3g} of max |logit|")
    for what, theirs, ours in (("weight decay", decay, reference["weight_decay"]),
                               ("loss", loss, reference["loss"]["reshape"])):
        if abs(theirs - ours) > LOSS_TOLERANCE * max(abs(ours), 1e-12):
            problems.append(f"{what} {theirs:.8g} != ours {ours:.8g}")
    return {"parameters": sum(groups.values()), "groups": groups,
            "output_shape": list(logits.shape), "max_rel_logit_diff": rel_diff,
            "weight_decay": decay, "loss": loss, "problems": problems}


def check_architectures(spec, frameworks=("keras", "torch"), seed=0):
    """Checks every peer in ``frameworks`` against our graph; raises ArchitectureMismatch.

    Returns:
        dict: ``spec``, ``ours`` (parameters, output_shape, weight_decay, loss),
        and one :func:`check_peer` dict per framework.
    """
    reference = ours_reference(spec, seed)
    report = {"spec": spec.to_dict(),
              "ours": {"parameters": sum(reference["groups"].values()),
                       "output_shape": list(reference["logits"].shape),
                       "weight_decay": reference["weight_decay"], "loss": reference["loss"]}}
    problems = []
    for framework in frameworks:
        report[framework] = check_peer(framework, reference)
        problems += [f"{framework}: {p}" for p in report[framework]["problems"]]
    if problems:
        raise ArchitectureMismatch("; ".join(problems))
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description="check the peers' architecture against ours")
    parser.add_argument("--backbone", default="compact", choices=("compact", "vgg16"))
    parser.add_argument("--variant", default="fcn8s", choices=fcn_spec.model.VARIANTS)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--size", type=int, default=64, help="image side, a multiple of 32")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--frameworks", default="keras,torch")
    args = parser.parse_args(argv)
    spec = fcn_spec.make_spec(args.backbone, args.batch, args.size, backbone=args.backbone,
                              variant=args.variant, width=args.width)
    try:
        report = check_architectures(spec, tuple(args.frameworks.split(",")))
    except ArchitectureMismatch as err:
        print(json.dumps({"ok": False, "error": str(err)}))
        return 1
    for framework in args.frameworks.split(","):
        report[framework].pop("groups")
    print(json.dumps(dict(report, ok=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
