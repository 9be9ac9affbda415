"""Keras VGG16 ImageNet weights -> the ``backbone='vgg16'`` variables of model.inference().

    vgg16_init_fn(h5_path, scope='fcn', graph=None) -> init_fn(session) -> [variable names]
    load_vgg16_weights(session, h5_path, scope='fcn') -> [variable names]

Two file layouts are read with h5py:

* The legacy Keras HDF5 layout of the downloadable files
  (``vgg16_weights_tf_dim_ordering_tf_kernels.h5`` and ``..._notop.h5``): the
  root (or its ``model_weights`` group) has a ``layer_names`` attribute; each
  layer group (block1_conv1 .. block5_conv3, fc1, fc2, predictions) has a
  ``weight_names`` attribute naming its datasets, e.g.
  ``block1_conv1/block1_conv1_W_1:0`` in the released files or
  ``block1_conv1/block1_conv1/kernel:0`` in files re-saved by Keras 2.
* The Keras 3 ``.weights.h5`` layout of ``model.save_weights``:
  ``layers/<key>/vars/0`` (kernel) and ``vars/1`` (bias), the layer name in
  the ``name`` attribute of ``vars``.

Keras kernels are already [kh, kw, in, out] (TF dim ordering). fc1's
[25088, 4096] kernel is the flattened 7 x 7 x 512 pool5 map in row-major
(row, column, channel) order, so it reshapes to fc6's [7, 7, 512, 4096];
fc2 reshapes to fc7's [1, 1, 4096, 4096]. ``predictions`` (ImageNet classes)
is ignored. A ``_notop`` file has only the convolutions: fc6/fc7 keep their
initialisation.

Values are written through each variable's initializer with a feed (the
``Variable.load`` mechanism), so no constants enter the graph (fc6 alone is
400 MB, over the 2 GB GraphDef limit with its copies) and a finalized graph
works. Call it after ``global_variables_initializer`` and before training.
"""
import h5py
import numpy as np
import tensorflow as tf

from fcn_tf1.errors import FcnError

# Keras layer name -> our layer scope under 'fcn/'.
KERAS_TO_FCN = {
    f"block{stage}_conv{index}": f"conv{stage}_{index}"
    for stage, convs in enumerate((2, 2, 3, 3, 3), start=1)
    for index in range(1, convs + 1)
}
CONV_LAYERS = tuple(KERAS_TO_FCN)
KERAS_TO_FCN.update({"fc1": "fc6", "fc2": "fc7"})


def _attr_strings(group, name):
    """A string-list attribute, also when Keras split it into name0, name1, ... chunks."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _layer_datasets(h5file, path):
    """{layer name: [h5py datasets in Keras weight order]} of either file layout."""
    root = h5file
    if "layer_names" not in root.attrs and "layer_names0" not in root.attrs and "model_weights" in root:
        root = root["model_weights"]
    layers = {}
    if "layer_names" in root.attrs or "layer_names0" in root.attrs:
        for layer in _attr_strings(root, "layer_names"):
            if layer not in root:
                raise FcnError(f"{path}: layer {layer!r} is listed in layer_names but has no group")
            group = root[layer]
            datasets = []
            for weight in _attr_strings(group, "weight_names"):
                if weight not in group:
                    raise FcnError(f"{path}: weight {layer}/{weight} is listed but missing")
                datasets.append(group[weight])
            layers[layer] = datasets
    elif "layers" in root and isinstance(root["layers"], h5py.Group):
        for key, group in root["layers"].items():
            variables = group.get("vars")
            if not isinstance(variables, h5py.Group):
                continue
            name = variables.attrs.get("name", key)
            name = name.decode("utf8") if isinstance(name, bytes) else str(name)
            layers[name] = [variables[k] for k in sorted(variables, key=int)]
    else:
        raise FcnError(f"{path}: not a Keras weight file (no layer_names attribute, "
                       "no layers/ group)")
    return layers


def _kernel_and_bias(layer, datasets, path):
    kernels = [d for d in datasets if d.ndim >= 2]
    biases = [d for d in datasets if d.ndim == 1]
    if len(kernels) != 1 or len(biases) != 1:
        raise FcnError(f"{path}: layer {layer} should hold one kernel and one bias, "
                       f"found shapes {[tuple(d.shape) for d in datasets]}")
    return kernels[0], biases[0]


def _graph_variables(graph, scope):
    prefix = scope.rstrip("/") + "/"
    return {v.op.name[len(prefix):]: v for v in graph.get_collection(
        tf.compat.v1.GraphKeys.GLOBAL_VARIABLES) if v.op.name.startswith(prefix)}


def _plan(h5file, path, variables):
    """Validates the file against the graph: [(keras layer, kernel var, bias var)]."""
    layers = _layer_datasets(h5file, path)
    missing = [name for name in CONV_LAYERS if name not in layers]
    if missing:
        raise FcnError(f"{path}: not a Keras VGG16 weight file: layer {missing[0]} is missing "
                       f"(file has {', '.join(sorted(layers)) or 'no layers'})")
    plan = []
    for keras_name, scope in KERAS_TO_FCN.items():
        if keras_name not in layers:  # a _notop file: fc6/fc7 keep their initialisation
            continue
        kernel, bias = _kernel_and_bias(keras_name, layers[keras_name], path)
        kernel_var, bias_var = variables[f"{scope}/weights"], variables[f"{scope}/biases"]
        want = kernel_var.shape.as_list()
        fits = (tuple(kernel.shape) == tuple(want)
                or (keras_name.startswith("fc") and kernel.ndim == 2
                    and kernel.size == np.prod(want) and kernel.shape[-1] == want[-1]))
        if not fits or tuple(bias.shape) != tuple(bias_var.shape.as_list()):
            raise FcnError(f"{path}: layer {keras_name} has kernel {tuple(kernel.shape)} and bias "
                           f"{tuple(bias.shape)}; VGG16's {scope} needs kernel {tuple(want)} "
                           f"and bias {tuple(bias_var.shape.as_list())}")
        plan.append((keras_name, kernel_var, bias_var))
    return plan


def _open(path):
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as err:
        raise FcnError(f"{path}: cannot read as an HDF5 weight file ({err})") from None


def vgg16_init_fn(h5_path, scope="fcn", graph=None):
    """Checks a Keras VGG16 weight file against the graph; returns a function that loads it.

    The check (layers present, shapes) runs now, reading only dataset
    shapes; the returned ``init_fn(session)`` reads the values and assigns
    them, adding no ops (it works on a finalized graph).

    Args:
        h5_path: str or path of a Keras VGG16 HDF5 weight file (full or _notop).
        scope: the scope inference() was built in.
        graph: the graph holding the variables; the default graph if None.

    Returns:
        ``init_fn(session) -> list of the variable names assigned``.

    Raises:
        FcnError: the file is unreadable, is not a VGG16 weight file (a
            conv layer missing) or a shape does not match; or the graph has no
            vgg16-backbone variables under ``scope``.
    """
    graph = graph or tf.compat.v1.get_default_graph()
    variables = _graph_variables(graph, scope)
    needed = [f"{s}/{w}" for s in KERAS_TO_FCN.values() for w in ("weights", "biases")]
    if any(name not in variables for name in needed):
        raise FcnError(f"cannot load {h5_path}: the graph has no VGG16 variables under "
                       f"'{scope}/' (build inference(..., backbone='vgg16') first)")
    with _open(h5_path) as h5file:
        plan = _plan(h5file, h5_path, variables)

    def init_fn(session):
        feeds, initializers = {}, []
        with _open(h5_path) as h5file:
            layers = _layer_datasets(h5file, h5_path)
            for keras_name, kernel_var, bias_var in plan:
                kernel, bias = _kernel_and_bias(keras_name, layers[keras_name], h5_path)
                for var, dataset in ((kernel_var, kernel), (bias_var, bias)):
                    value = np.asarray(dataset, dtype=np.float32).reshape(var.shape.as_list())
                    feeds[var.initializer.inputs[1]] = value
                    initializers.append(var.initializer)
        session.run(initializers, feed_dict=feeds)
        return [var.op.name for _, k, b in plan for var in (k, b)]

    return init_fn


def load_vgg16_weights(session, h5_path, scope="fcn"):
    """Loads a Keras VGG16 weight file into the session's vgg16-backbone variables.

    Args:
        session: a ``tf.compat.v1.Session`` whose graph holds inference(backbone='vgg16').
        h5_path: str or path of the Keras HDF5 weight file (full or _notop).
        scope: the scope inference() was built in.

    Returns:
        list of the variable names assigned (26 for a _notop file, 30 for a full one).

    Raises:
        FcnError: see :func:`vgg16_init_fn`.
    """
    return vgg16_init_fn(h5_path, scope=scope, graph=session.graph)(session)
