"""Train the CNN on labelled images and publish it: python -m model_training.train --help."""

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import re
import shlex
import shutil
import sys
import time
from collections.abc import Iterator

import keras
import numpy as np

from model_training import calibration, evaluate, gate, ood
from model_training import data as datasets
from model_training.data import LabelledImages
from model_training.export import export_serving_forms
from model_training.model import (
    ARCHITECTURES,
    Lookahead,
    WarmupLinearDecay,
    compile_model,
    identity_init,
    make_model,
    whiten,
    with_flip_averaging,
    with_temperature,
)
from model_training.publish import PublishError, check_writable, publish, write_metadata
from service.models import artifact, release
from service.models.inference import ModelLoadError
from service.models.policy import SHADOW, SPLIT

# What a run does with its version once published (docs/models.md, "The release gate").
PROMOTE, CANARY, PUBLISH = "promote", "canary", "publish"

# airbench94's budget is 9.9 epochs of 50,000 images; five more make up for the smaller
# split here (45,000 less validation) and still fit well inside an hour on two cores.
# Twice as many, with cutout, gave no better model here (docs/models.md, "What each part gave").
# The defaults are the shipped default model's recipe (cifar10 version 2, docs/models.md):
# what it costs to serve is what the service's memory limits were measured with.
DEFAULT_EPOCHS = 30
MIN_STEPS = 500


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Read the command line; argparse itself exits 2 on a malformed one."""
    parser = argparse.ArgumentParser(
        prog="python -m model_training.train",
        description="Train the image classifier and publish it as models/<name>/<version>/.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", action="append", help="folder of class subfolders of "
                        "images; repeat it for several (e.g. base set + exported feedback)")
    source.add_argument("--dataset", choices=datasets.KERAS_DATASETS + datasets.PACKAGED_DATASETS,
                        help="a keras.datasets dataset (downloaded once), or digits: "
                             "scikit-learn's 8x8 handwritten digits, inside its package")
    parser.add_argument("--test-dir", help="folder of class subfolders used only for the test")
    parser.add_argument("--output", default="models", help="models folder (default: models)")
    parser.add_argument("--name", help="model name (default: from the dataset or folder)")
    parser.add_argument("--epochs", type=positive_int,
                        help=f"epochs ({DEFAULT_EPOCHS}; more for small folders, to reach "
                             f"{MIN_STEPS} steps)")
    parser.add_argument("--batch-size", type=positive_int, default=1024,
                        help="largest batch (1024; smaller for small folders)")
    parser.add_argument("--patience", type=positive_int,
                        help="epochs without a better validation loss before stopping "
                             "(default: a quarter of the epochs, at least 3)")
    for flag, kind, default, text in RECIPE_OPTIONS:
        parser.add_argument(flag, type=kind, default=default, help=f"{text} ({default})")
    parser.add_argument("--flip-tta", action=argparse.BooleanOptionalAction, default=False,
                        help="serve the mean of the answers for the image and its mirror: "
                             "about +1 point for twice the model time (default: off)")
    parser.add_argument("--lookahead", action=argparse.BooleanOptionalAction, default=True,
                        help="every 5 steps, pull the weights towards a slow average of them "
                             "and end on it, as airbench (default: on)")
    parser.add_argument("--width", type=positive_int, default=32,
                        help="filters in the first conv group; the others have 4 times as many "
                             "(32; 64 is about a point more accurate at 4 times the model time)")
    parser.add_argument("--architecture", choices=ARCHITECTURES, default=ARCHITECTURES[0],
                        help="airbench: three groups of two convolutions (default); deep: a "
                             "third, residual one in the last group, at the same model time")
    parser.add_argument("--teacher", metavar="VERSION_FOLDER",
                        help="distil: learn from this published version's answers as well as "
                             "the labels (a wider model trained on the same data and --seed, "
                             "e.g. with --width 64 --flip-tta --release publish)")
    parser.add_argument("--distillation", type=fraction, default=0.5,
                        help="with --teacher: the teacher's share of the loss (0.5)")
    parser.add_argument("--distillation-temperature", type=positive_float, default=2.0,
                        help="with --teacher: the softening of both answers (2)")
    parser.add_argument("--image-size", type=positive_int,
                        help="side of the square model input in pixels (default: from the data)")
    parser.add_argument("--color-mode", choices=("rgb", "grayscale"),
                        help="model input channels (default: from the data)")
    parser.add_argument("--validation-split", type=fraction, default=0.05,
                        help="fraction of the training images for early stopping (0.05)")
    parser.add_argument("--test-split", type=fraction, default=0.1,
                        help="fraction held out for the test when there is no test set (0.1)")
    parser.add_argument("--precision", choices=("auto", "float32", "mixed_bfloat16"),
                        default="auto",
                        help="training arithmetic (auto: bfloat16 where the CPU has it)")
    parser.add_argument("--seed", type=int, default=1337, help="random seed (1337)")
    parser.add_argument("--weights-from", metavar="VERSION_FOLDER",
                        help="no training: take a published version's trained network (e.g. "
                             "models/cifar10/2), calibrate it and choose its threshold on this "
                             "run's split, and publish it as a new version (same data and "
                             "--seed as that version's run, so its held-out images stay out)")
    gate_options = parser.add_argument_group(
        "release", "the gate compares the new version with stable on the held-out images")
    gate_options.add_argument("--release", choices=(PROMOTE, CANARY, PUBLISH), default=PROMOTE,
                              help="promote: make it stable if it passes the gate (default); "
                                   "canary: make it the canary if it passes; publish: only "
                                   "publish it, stable stays")
    gate_options.add_argument("--gate-margin", type=fraction, default=gate.DEFAULT_MARGIN,
                              help="how much lower than stable's its accuracy may be and still "
                                   f"pass ({gate.DEFAULT_MARGIN})")
    gate_options.add_argument("--allow-class-change", action="store_true",
                              help="let a version whose classes differ from stable's pass")
    gate_options.add_argument("--canary-percent", type=release.percentage, default=10,
                              help="with --release canary: its share of requests (10)")
    gate_options.add_argument("--canary-mode", choices=(SPLIT, SHADOW), default=SPLIT,
                              help="with --release canary: split (it answers its share) or "
                                   "shadow (it sees a copy only)")
    args = parser.parse_args(argv)
    if args.teacher and args.weights_from:
        parser.error("--teacher trains a network; --weights-from takes a trained one")
    if args.test_dir and not args.data_dir:
        parser.error("--test-dir goes with --data-dir")
    if args.validation_split == 0:
        parser.error("--validation-split must be above 0: early stopping watches it")
    if args.test_split == 0 and not (args.test_dir or args.dataset in datasets.KERAS_DATASETS):
        parser.error("--test-split must be above 0 unless --test-dir gives a test set")
    return args


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number above 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def fraction(text: str) -> float:
    """An argparse type: a number in [0, 1)."""
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


# The recipe's numbers (airbench's, for this CPU): flag, type, default, what it sets.
RECIPE_OPTIONS = (
    ("--learning-rate", positive_float, 1.5,
     "peak SGD learning rate per 1,024 images in a batch"),
    ("--weight-decay", fraction, 0.0089, "decoupled weight decay, times the learning rate"),
    ("--label-smoothing", fraction, 0.2, "label smoothing"),
    ("--cutout", fraction, 0.0,
     "side of the square erased from each training image, as a fraction of its side"),
)


def default_name(args: argparse.Namespace) -> str:
    """Name the model after its dataset or data folder."""
    if args.name:
        return args.name
    if args.dataset:
        return args.dataset
    first = args.data_dir[0]
    folder = os.path.basename(os.path.normpath(first))
    if folder in ("train", "training"):
        folder = os.path.basename(os.path.dirname(os.path.normpath(first)))
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", folder).strip("-.") or "model"


def choose_precision(requested: str) -> str:
    """Use bfloat16 only where the CPU computes it natively; elsewhere it is slower."""
    if requested != "auto":
        return requested
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as file:
            flags = file.read()
    except OSError:
        return "float32"
    return "mixed_bfloat16" if re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) else "float32"


def load_data(args: argparse.Namespace) -> tuple[LabelledImages, LabelledImages,
                                                 LabelledImages, list[str]]:
    """Return (train, validation, test, skipped files) as the arguments ask."""
    channels = {"rgb": 3, "grayscale": 1, None: None}[args.color_mode]
    if args.dataset in datasets.PACKAGED_DATASETS:
        train, test = datasets.load_packaged_dataset(args.dataset), None
    elif args.dataset:
        train, test = datasets.load_keras_dataset(args.dataset)
    else:
        train = datasets.load_image_folder(args.data_dir, args.image_size, channels)
        if args.test_dir:
            test = datasets.load_image_folder(args.test_dir, train.images.shape[1],
                                              train.images.shape[3])
            if test.class_names != train.class_names:
                raise datasets.DataError("--test-dir must have the same class subfolders "
                                         "as --data-dir")
        else:
            test = None
    skipped = train.skipped + (test.skipped if test else [])
    if test is None:
        train, test = datasets.split(train, args.test_split, args.seed)
    train, validation = datasets.split(train, args.validation_split, args.seed + 1)
    return train, validation, test, skipped


def train(args: argparse.Namespace, argv: list[str]) -> tuple[str, dict, gate.Verdict, str]:
    """Train, evaluate, publish and release; return (folder, metadata, verdict, outcome)."""
    # 1. Check the output, and that its serving policy can be read, before spending an
    #    hour on training.
    name = default_name(args)
    model_dir = os.path.join(args.output, name)
    check_writable(model_dir)
    release.read_policy(model_dir)

    # 2. Decode every image once, into memory, and split off validation and test sets.
    train_set, validation_set, test_set, skipped = load_data(args)
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s), e.g. {skipped[0]}", file=sys.stderr)
    plan = plan_training(args, len(train_set.labels))

    keras.utils.set_random_seed(args.seed)
    if args.weights_from:
        # 3-4. A published version's trained network instead of a new one.
        plain, source = trained_network(args.weights_from, train_set)
    else:
        # With a teacher, its answers on every training and validation image, once.
        teacher = teacher_answers(args, train_set, validation_set, test_set)
        precision = choose_precision(args.precision)
        with precision_policy(precision):
            # 3. Build the network, and fit its frozen stem to these images' patches.
            model = build_model(args, train_set)
            compile_model(model, WarmupLinearDecay(plan["peak_learning_rate"], plan["steps"]),
                          weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
                          distillation=teacher and (args.distillation,
                                                    args.distillation_temperature))
            model.summary(print_fn=lambda line, **kwargs: print(line))

            # 4. Fit, watching the validation set; keep the best epoch's weights.
            history, seconds = fit(model, train_set, validation_set, args, plan, teacher)
        plain = float32_copy(model, args)

    # 5. The served copy: float32 (it runs on any CPU), averaged over the mirror image if
    #    asked, its temperature fitted on the validation split, its threshold chosen.
    serving_model, metrics, honesty = serving_copy(plain, args, validation_set, test_set)

    # 6. Publish the version atomically, with its metadata and pictures. What serves now is
    #    written into serving.json first, so the new version cannot go live before the gate
    #    has judged it.
    if args.weights_from:
        metadata, curves = reused_run(args, argv, source, (train_set, validation_set, test_set),
                                      skipped, metrics)
    else:
        metadata = describe_run(args, argv, name, precision, plan, history, seconds,
                                (train_set, validation_set, test_set), skipped,
                                serving_model, metrics)
        curves = history.history
    metadata.update(honesty.pop("metadata"))
    stable = pin_stable(model_dir)
    folder, version = publish(model_dir, lambda folder, version: write_version(
        folder, version, serving_model, metadata, curves, test_set.images, honesty))

    # 7. The release gate: the new version against stable, on the same held-out images.
    verdict = gate.judge(model_dir, version, stable, test_set, args.gate_margin,
                         args.allow_class_change)
    return folder, metadata, verdict, apply_verdict(args, model_dir, verdict)


def pin_stable(model_dir: str) -> int | None:
    """Write the version that serves now into serving.json as stable; return it (None if none)."""
    if not artifact.complete_versions(model_dir):
        return None
    policy = release.change_policy(model_dir, lambda policy, stable: policy)
    return policy.stable


def apply_verdict(args: argparse.Namespace, model_dir: str, verdict: gate.Verdict) -> str:
    """Promote, make canary or leave the new version as --release says; say what was done."""
    version, stable = verdict.version, verdict.stable_version
    if args.release == PUBLISH and stable is not None:
        return f"published only: stable stays version {stable}"
    if not verdict.passed:
        return f"stable stays version {stable}; version {version} is published but not released"
    if stable is None:
        # Nothing else serves: without a serving.json the newest version does, so none is
        # written (a policy file already there gets the label).
        if os.path.exists(os.path.join(model_dir, artifact.POLICY_FILE)):
            release.promote(model_dir, version, by="training")
        return f"version {version} serves as the model's only version"
    if args.release == PROMOTE:
        release.promote(model_dir, version, by="training")
        return f"version {version} is now stable"
    release.set_canary(model_dir, version, args.canary_percent, args.canary_mode)
    return (f"version {version} is now the canary: {args.canary_percent:g}% of requests, "
            f"{args.canary_mode}; stable stays version {stable}")


def plan_training(args: argparse.Namespace, train_images: int) -> dict:
    """Batch size, epochs and steps for this much data; small folders get more, smaller steps."""
    # At most an eighth of the data per step, so even a few hundred images get several
    # steps per epoch; powers of two keep the batches even.
    batch_size = min(args.batch_size, max(8, 2 ** int(math.log2(max(1, train_images // 8)))))
    steps_per_epoch = -(-train_images // batch_size)
    # airbench's schedule is tuned for about 500 steps: a small folder gets more epochs to
    # reach them (at most 10 times the default); --epochs, when given, decides alone.
    epochs = args.epochs or min(10 * DEFAULT_EPOCHS,
                                max(DEFAULT_EPOCHS, -(-MIN_STEPS // steps_per_epoch)))
    return {
        "batch_size": batch_size,
        "epochs": epochs,
        # The plateau at the peak learning rate lasts longer in a longer run.
        "patience": args.patience or max(3, epochs // 4),
        # Validation loss jumps about while the learning rate is near its peak: a 30-epoch
        # run at --width 32 had its best loss in the warm-up (epoch 3) and stopped at epoch
        # 10 with 0.72. So early stopping watches only the second half, where the rate
        # falls and the loss settles; its best weights come from there too.
        "early_stopping_from_epoch": epochs // 2,
        "steps": epochs * steps_per_epoch,
        # The learning rate is given per 1,024 images (as airbench's): it scales with the batch.
        "peak_learning_rate": args.learning_rate * batch_size / 1024,
    }


@contextlib.contextmanager
def precision_policy(precision: str) -> Iterator[None]:
    """Use `precision` for the layers built inside; restore float32 afterwards, even on error."""
    keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def build_model(args: argparse.Namespace, train_set: LabelledImages) -> keras.Model:
    """The network for this data, with its whitening stem fitted and Dirac-initialised groups."""
    model = make_model(train_set.images.shape[1:], len(train_set.class_names), width=args.width,
                       cutout=args.cutout, architecture=args.architecture)
    whiten(model, train_set.images)
    identity_init(model)
    return model


def fit(model: keras.Model, train_set: LabelledImages, validation_set: LabelledImages,
        args: argparse.Namespace, plan: dict,
        teacher: tuple[np.ndarray, np.ndarray] | None = None
        ) -> tuple[keras.callbacks.History, float]:
    """Run model.fit with early stopping; return (history, seconds in fit).

    With `teacher` (its answers on the training and validation images), each target is the
    label followed by the teacher's answer, as model_training.model.distillation_loss reads it.
    """
    import tensorflow as tf

    def targets(labelled: LabelledImages, answers: np.ndarray | None) -> np.ndarray:
        if answers is None:
            return labelled.labels
        return np.concatenate([labelled.labels[:, None].astype(np.float32), answers], axis=1)

    train_targets = targets(train_set, teacher and teacher[0])
    validation_targets = targets(validation_set, teacher and teacher[1])
    # The arrays are already decoded in memory; shuffle each epoch and keep the CPU fed.
    training_data = (tf.data.Dataset.from_tensor_slices((train_set.images, train_targets))
                     .shuffle(len(train_set.labels), seed=args.seed, reshuffle_each_iteration=True)
                     .batch(plan["batch_size"]).prefetch(tf.data.AUTOTUNE))
    validation_data = (tf.data.Dataset.from_tensor_slices((validation_set.images,
                                                           validation_targets))
                       .batch(1024).prefetch(tf.data.AUTOTUNE))
    # The schedule does the real work; early stopping is the guard against a run that
    # stops improving (a small or noisy dataset), and it keeps the best epoch's weights.
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=plan["patience"], restore_best_weights=True,
        start_from_epoch=plan["early_stopping_from_epoch"], verbose=1)
    callbacks = ([Lookahead(plan["steps"])] if args.lookahead else []) + [early_stopping]
    started = time.monotonic()
    history = model.fit(training_data, validation_data=validation_data, epochs=plan["epochs"],
                        callbacks=callbacks, shuffle=False,
                        verbose=2 if not sys.stdout.isatty() else 1)
    return history, time.monotonic() - started


def float32_copy(model: keras.Model, args: argparse.Namespace) -> keras.Model:
    """A float32 copy of the trained network without optimizer state."""
    with precision_policy("float32"):
        plain = make_model(model.input_shape[1:], model.output_shape[-1], width=args.width,
                           cutout=args.cutout, architecture=args.architecture)
    plain.set_weights(model.get_weights())
    return plain


def published_version(folder: str, option: str,
                      train_set: LabelledImages) -> tuple[keras.Model, dict]:
    """A published version's served model and its metadata, checked against this data."""
    import model_training.model  # noqa: F401  (registers the custom layers)

    try:
        with open(os.path.join(folder, artifact.METADATA_FILE), encoding="utf-8") as file:
            source = json.load(file)
        model = keras.saving.load_model(os.path.join(folder, artifact.KERAS_FILE), compile=False)
    except (OSError, ValueError, KeyError) as error:
        raise datasets.DataError(f"{option} {folder!r}: not a readable version folder "
                                 f"({getattr(error, 'strerror', None) or error})") from None
    if (source.get("classes") != train_set.class_names
            or tuple(model.input_shape[1:]) != train_set.images.shape[1:]):
        raise datasets.DataError(f"{option} {folder!r}: its classes or input size differ "
                                 "from this data's")
    return model, source


def trained_network(folder: str, train_set: LabelledImages) -> tuple[keras.Model, dict]:
    """A published version's network without its serving wrappers, and its metadata."""
    model, source = published_version(folder, "--weights-from", train_set)
    # The mirror averaging and the temperature wrap the network as a nested model.
    while any(isinstance(layer, keras.Model) for layer in model.layers):
        model = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    return model, source


def teacher_answers(args: argparse.Namespace, train_set: LabelledImages,
                    validation_set: LabelledImages, test_set: LabelledImages
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """The --teacher's served answers on the training and validation images (None without).

    The teacher must not have seen this run's test images: it was trained on the same data
    with the same --seed, so its split is this one's (checked by the image counts).
    """
    if not args.teacher:
        return None
    model, source = published_version(args.teacher, "--teacher", train_set)
    dataset, training = source.get("dataset", {}), source.get("training", {})
    if (training.get("seed") != args.seed or dataset.get("test_images") != len(test_set.labels)
            or dataset.get("train_images") != len(train_set.labels)):
        raise datasets.DataError(f"--teacher {args.teacher!r}: trained on another split (its "
                                 "--seed or image counts differ), so it may have seen this "
                                 "run's test images")
    print(f"teacher: {args.teacher} (test accuracy "
          f"{source.get('metrics', {}).get('test_accuracy')})")
    return tuple(model.predict(labelled.images, batch_size=512, verbose=0).astype(np.float32)
                 for labelled in (train_set, validation_set))


def serving_copy(plain: keras.Model, args: argparse.Namespace, validation_set: LabelledImages,
                 test_set: LabelledImages) -> tuple[keras.Model, dict, dict]:
    """The served model (mirror averaging if asked, then the fitted temperature), its test
    metrics (with and without the flip), and its calibration and unknown-answer figures."""
    flipped = with_flip_averaging(plain)
    served = flipped if args.flip_tta else plain
    metrics = evaluate.evaluate(served, test_set)
    other = evaluate.evaluate(plain if args.flip_tta else flipped, test_set)
    metrics["test_accuracy_flip_averaged" if not args.flip_tta
            else "test_accuracy_single_view"] = other["test_accuracy"]
    # The temperature is fitted to the answer serving gives: with the flip on, the average.
    validation = served.predict(validation_set.images, batch_size=256, verbose=0)
    temperature = calibration.fit_temperature(validation, validation_set.labels)
    calibrated = with_temperature(served, temperature)
    before = served.predict(test_set.images, batch_size=256, verbose=0)
    after = calibration.scale(before, temperature)
    threshold, unknown = ood.unknown_answer(
        lambda images: calibrated.predict(images, batch_size=256, verbose=0),
        validation_set.images, test_set.images, tuple(plain.input_shape[1:]), args.seed,
        args.dataset)
    print(f"temperature {temperature:g}; min_confidence {threshold:g}")
    honesty = {"before": before, "after": after, "labels": test_set.labels,
               "temperature": temperature, "metadata": {
                   "min_confidence": threshold,
                   "calibration": {
                       "temperature": temperature, "bins": calibration.ECE_BINS,
                       "at_search_bound": calibration.at_bound(temperature),
                       "search_range": list(calibration.TEMPERATURE_RANGE),
                       "fitted_on": f"the validation split ({len(validation_set.labels)} "
                                    "images), on the served answer"
                                    + (" (mirror-averaged)" if args.flip_tta else ""),
                       "test": calibration.calibration_report(before, after, test_set.labels)},
                   "unknown": unknown}}
    return calibrated, metrics, honesty


def describe_run(args: argparse.Namespace, argv: list[str], name: str, precision: str,
                 plan: dict, history: keras.callbacks.History, seconds: float,
                 sets: tuple[LabelledImages, LabelledImages, LabelledImages],
                 skipped: list[str], serving_model: keras.Model, metrics: dict) -> dict:
    """metadata.json's content, without the version number (publishing decides it)."""
    import tensorflow as tf

    train_set, validation_set, test_set = sets
    losses = history.history["val_loss"]
    epochs_run = len(losses)
    height, width, channels = serving_model.input_shape[1:]
    return {
        "name": name,
        "version": None,
        "classes": train_set.class_names,
        "input": {"height": int(height), "width": int(width), "channels": int(channels)},
        "metrics": metrics,
        # What the service's drift gauges compare its live answers with
        # (service/observability/drift.py).
        "drift_reference": metrics.pop("prediction_profile", None),
        "dataset": {
            "source": dataset_source(args),
            "folders": args.data_dir or [],
            "test_source": ("official test split" if args.dataset in datasets.KERAS_DATASETS
                            else args.test_dir or f"held out {args.test_split:.0%} of the data"),
            "train_images": int(len(train_set.labels)),
            "validation_images": int(len(validation_set.labels)),
            "test_images": int(len(test_set.labels)),
            "skipped_files": len(skipped),
        },
        "training": {
            "command": "python -m model_training.train " + shlex.join(argv),
            "epochs_run": epochs_run,
            "best_epoch": int(min(range(epochs_run), key=losses.__getitem__)) + 1,
            "seconds": round(seconds, 1),
            "early_stopping": {"monitor": "val_loss", "patience": plan["patience"],
                               "from_epoch": plan["early_stopping_from_epoch"] + 1,
                               "restore_best_weights": True,
                               "stopped_early": epochs_run < plan["epochs"]},
            "max_epochs": plan["epochs"],
            "batch_size": plan["batch_size"],
            "optimizer": "sgd (nesterov, momentum 0.85, batch-norm shifts 64x)",
            "learning_rate": {"peak": round(plan["peak_learning_rate"], 6),
                              "per_1024_images": args.learning_rate,
                              "schedule": "linear warm-up (23% of steps), linear decay to 7%"},
            "weight_decay": args.weight_decay,
            "label_smoothing": args.label_smoothing,
            "cutout": args.cutout,
            "lookahead": args.lookahead,
            "architecture": args.architecture,
            "distillation": args.teacher and {
                "teacher": args.teacher, "weight": args.distillation,
                "temperature": args.distillation_temperature},
            "flip_test_time_augmentation": args.flip_tta,
            "precision": precision,
            "seed": args.seed,
            "parameters": int(serving_model.count_params()),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s)",
        },
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "framework": {"tensorflow": tf.__version__, "keras": keras.__version__,
                      "python": platform.python_version()},
    }


def dataset_source(args: argparse.Namespace) -> str:
    """Where the images came from, as metadata.json records it."""
    if args.dataset in datasets.PACKAGED_DATASETS:
        return f"sklearn.datasets.load_{args.dataset}"
    if args.dataset:
        return f"keras.datasets.{args.dataset}"
    # The first folder (the base set): export checks a conversion on it (model_training/export.py).
    return args.data_dir[0]


def reused_run(args: argparse.Namespace, argv: list[str], source: dict,
               sets: tuple[LabelledImages, LabelledImages, LabelledImages],
               skipped: list[str], metrics: dict) -> tuple[dict, str]:
    """metadata.json's content for a --weights-from run: the source's training, this run's
    evaluation; and the source's training-curves picture (there were no new epochs)."""
    train_set, validation_set, test_set = sets
    training = dict(source["training"])
    training.update({"command": "python -m model_training.train " + shlex.join(argv),
                     "weights_from": {"name": source.get("name"),
                                      "version": source.get("version"),
                                      "command": source["training"].get("command")},
                     "flip_test_time_augmentation": args.flip_tta})
    import tensorflow as tf

    metadata = {
        "name": default_name(args), "version": None, "classes": train_set.class_names,
        "input": source["input"], "metrics": metrics,
        "dataset": {**source.get("dataset", {}), "source": dataset_source(args),
                    "train_images": int(len(train_set.labels)),
                    "validation_images": int(len(validation_set.labels)),
                    "test_images": int(len(test_set.labels)), "skipped_files": len(skipped)},
        "training": training,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "framework": {"tensorflow": tf.__version__, "keras": keras.__version__,
                      "python": platform.python_version()},
    }
    return metadata, os.path.join(args.weights_from, artifact.TRAINING_CURVES_FILE)


def write_version(folder: str, version: int, serving_model: keras.Model, metadata: dict,
                  history: dict | str, test_images: np.ndarray, honesty: dict) -> None:
    """Write every file of one version into `folder`: the model in each of its forms first.

    `history` is the run's curves, or the path of the picture of a --weights-from source's.
    """
    metadata["version"] = version
    serving_model.save(os.path.join(folder, artifact.KERAS_FILE))
    # model.tflite and the SavedModel, each checked against the Keras model on the test images.
    metadata["serving"] = export_serving_forms(serving_model, test_images, folder)
    write_metadata(folder, metadata)
    curves = os.path.join(folder, artifact.TRAINING_CURVES_FILE)
    if isinstance(history, str):
        shutil.copyfile(history, curves)
    else:
        evaluate.plot_training_curves(history, curves)
    calibration.plot_reliability_diagram(
        honesty["before"], honesty["after"], honesty["labels"], honesty["temperature"],
        os.path.join(folder, artifact.RELIABILITY_DIAGRAM_FILE))
    evaluate.plot_confusion_matrix(metadata["metrics"]["confusion_matrix"], metadata["classes"],
                                   os.path.join(folder, artifact.CONFUSION_MATRIX_FILE))


def main(argv: list[str] | None = None) -> int:
    """Run the command line; errors a user can fix end with one line and exit status 2."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        folder, metadata, verdict, outcome = train(args, argv)
    except (datasets.DataError, PublishError, release.ReleaseError, ModelLoadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing was published", file=sys.stderr)
        return 130
    print(f"published: {folder}")
    print(f"test accuracy: {metadata['metrics']['test_accuracy']:.4f}")
    print(f"{verdict.line()}; {outcome}")
    return 0 if verdict.passed or args.release == PUBLISH else gate.REFUSED


if __name__ == "__main__":
    sys.exit(main())
