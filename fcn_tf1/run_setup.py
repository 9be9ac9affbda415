"""What a training process knows before its first step: the run's config and its data split.

API::

    resolve_config(requested, train_dir, explicit=())   -> (RunConfig, resuming)
    with_data_fingerprint(config, train_dir, resuming)   the data file checked and recorded
    with_class_set(config, dataset, resuming, train_dir)  the data file's classes, checked
    with_class_statistics(config, dataset, train_indices, log)   class weights / priors
    prepare_run(requested, train_dir, explicit=(), log=print, stop=None, resolve=True,
                write_config=True, check=None, where="")   -> Run
    describe(run)                                        the "starting run" line

Single-process training and every distributed task start the same way:
resume from ``config.json`` when the dir holds a run (options that would
change the graph or the data order are refused), split the data file into
training and validation images, count the class statistics the config asks
for, and (the writer of the run only) save the config. The result is one
``Run`` record passed down instead of long argument lists.
"""
import dataclasses
import pathlib
from typing import Callable, List

import numpy as np

from fcn_tf1 import checkpoints, h5data, losses
from fcn_tf1 import config as config_lib
from fcn_tf1.errors import ConfigError, FcnError


@dataclasses.dataclass(frozen=True)
class Run:
    """A run as one training process sees it.

    ``config`` is the resolved RunConfig (class statistics included),
    ``resuming`` whether ``train_dir`` held a run already, ``class_names`` the
    data file's, ``train_indices`` / ``val_indices`` its deterministic split,
    ``stop`` a callable that turns True on SIGINT/SIGTERM (signals.StopRequest)
    and ``log`` a print-like function.
    """
    config: config_lib.RunConfig
    train_dir: pathlib.Path
    resuming: bool
    class_names: List[str]
    train_indices: List[int]
    val_indices: List[int]
    stop: Callable[[], bool]
    log: Callable[..., None] = print
    where: str = ""  # words for the "starting run" line, e.g. the towers' devices


def resolve_config(requested, train_dir, explicit=()):
    """The config this run uses: the saved one when resuming, else ``requested``.

    Returns:
      (RunConfig, resuming).
    """
    train_dir = pathlib.Path(train_dir)
    has_config = (train_dir / config_lib.CONFIG_NAME).is_file()
    if checkpoints.latest(train_dir) and not has_config:
        raise ConfigError(f"{train_dir}: holds checkpoints but no config.json; "
                          "cannot tell how to rebuild the graph")
    if not has_config:
        return requested, False
    saved = config_lib.load(train_dir)
    return config_lib.merge_for_resume(saved, requested, set(explicit), train_dir), True


def with_class_statistics(config, dataset, train_indices, log):
    """``config`` with the class weights and class priors it asks for, both counted on
    its training images in one pass; values already stored (a resumed run) are kept."""
    weigh = config.class_weighting != "none" and config.class_weights is None
    correct = (bool(config.prior_correction or config.chooses_prior_correction)
               and config.class_priors is None)
    if not (weigh or correct):
        return config
    counts, presence_pixels = dataset.label_statistics(train_indices)
    if weigh:
        config = _with_class_weights(config, counts, presence_pixels, log)
    if correct:
        config = _with_class_priors(config, counts, log)
    return config


def _with_class_weights(config, counts, presence_pixels, log):
    if config.class_weighting == "median_frequency_global":  # plain frequencies: stronger
        presence_pixels = None
    weights = losses.median_frequency_weights(counts, presence_pixels)
    if config.class_weighting == "sqrt_median_frequency":  # the milder balance
        weights = np.sqrt(weights)
    log(f"class weights ({config.class_weighting}): " + " ".join(f"{w:.2f}" for w in weights))
    return config.replace(class_weights=tuple(float(w) for w in weights))


def _with_class_priors(config, counts, log):
    priors = losses.class_priors(counts)
    if not config.prior_correction:  # chosen at the end of the run (chooses_prior_correction)
        return config.replace(class_priors=priors)
    boost = np.exp(losses.prior_offsets(priors, config.prior_correction))
    log(f"prior correction {config.prior_correction:g}: predictions weigh each class by "
        f"1/prior^{config.prior_correction:g} (x{boost.min():.3g} to x{boost.max():.3g} before "
        "normalising; the loss is unchanged)")
    return config.replace(class_priors=priors)


def with_class_set(config, dataset, resuming, train_dir):
    """``config`` with the data file's classes (count, names, colours, void label).

    A resumed run keeps its class set: a data file with other classes is refused
    (ConfigError, one line), even with --allow-other-data; the graph's last layer
    and every per-class number belong to the classes it was trained on.
    """
    names = tuple(dataset.class_names)
    if resuming and (config.num_classes != dataset.num_classes or (
            config.class_names is not None and tuple(config.class_names) != names)):
        had = ", ".join(config.class_names or ())[:80] or "names not recorded"
        raise ConfigError(
            f"{pathlib.Path(train_dir) / config_lib.CONFIG_NAME}: the run was trained on "
            f"{config.num_classes} classes ({had}), {config.data} has {dataset.num_classes} "
            f"({', '.join(names)[:80]}); a run cannot change its classes: train a new run "
            "in another --train-dir")
    return config.replace(num_classes=dataset.num_classes, void_label=dataset.void_label,
                          class_names=names,
                          class_colors=tuple(tuple(int(v) for v in c)
                                             for c in dataset.class_colors))


def with_data_fingerprint(config, train_dir, resuming):
    """``config`` with the fingerprint of its data file (h5data.fingerprint).

    A resumed run whose config.json holds another fingerprint is refused
    (ConfigError, one line) unless ``config.allow_other_data``: the data order,
    the split and the class statistics of the run belong to that file. A
    config.json without one (written before fingerprints) gets one now.
    """
    current = h5data.fingerprint(config.data)
    saved = config.data_fingerprint
    if resuming and saved is not None and saved != current and not config.allow_other_data:
        raise ConfigError(
            f"{pathlib.Path(train_dir) / config_lib.CONFIG_NAME}: the run was trained on a data "
            f"file with fingerprint {saved}, {config.data} has {current} (another file, or "
            "changed); resume with the same data, or pass --allow-other-data to go on anyway")
    return config.replace(data_fingerprint=current)


def prepare_run(requested, train_dir, explicit=(), log=print, stop=None, resolve=True,
                write_config=True, check=None, where=""):
    """Resolves the config, splits the data, counts class statistics, saves config.json.

    Args:
      requested: RunConfig from the command line.
      train_dir: pathlib.Path of the run directory.
      explicit: names of the config fields the user gave explicitly (checked
        against the saved config when resuming).
      log: a print-like function.
      stop: the stop request of the process (signals.StopRequest), or None.
      resolve: False for a distributed worker that cannot see the chief's
        run directory: it trains with ``requested`` as given.
      write_config: whether this process writes config.json (the one writer
        of the run: the single trainer, or the distributed chief).
      check: optional callable(RunConfig) that raises ConfigError to refuse
        the resolved config before anything is written.
      where: words for the "starting run" line.
    """
    train_dir = pathlib.Path(train_dir)
    config, resuming = (resolve_config(requested, train_dir, explicit) if resolve
                        else (requested, False))
    if check is not None:
        check(config)
    config = with_data_fingerprint(config, train_dir, resuming)
    with h5data.H5Dataset(config.data) as dataset:
        config = with_class_set(config, dataset, resuming, train_dir)
        class_names = list(dataset.class_names)
        train_indices, val_indices = dataset.split(config.val_fraction)
        if not train_indices:
            raise FcnError(f"{config.data}: no training images after the validation split")
        config = with_class_statistics(config, dataset, train_indices,
                                       log if write_config else (lambda *a: None))
    if write_config:  # the override holds for this start only
        config_lib.save(config.replace(allow_other_data=False), train_dir)
    return Run(config=config, train_dir=train_dir, resuming=resuming, class_names=class_names,
               train_indices=list(train_indices), val_indices=list(val_indices),
               stop=stop or (lambda: False), log=log, where=where)


def describe(run, extra=""):
    """The "starting run" line."""
    config = run.config
    return (f"{'resuming' if run.resuming else 'starting'} run in {run.train_dir}{run.where}: "
            f"{config.backbone} {config.variant} width {config.width}, "
            f"{len(run.train_indices)} train / {len(run.val_indices)} val images from "
            f"{config.data}{extra}")
