"""Train the CNN on labelled images and publish it: python -m model_training.train --help."""

import argparse
import datetime
import os
import platform
import re
import shlex
import sys
import time

from model_training import data as datasets
from model_training.export import export_serving_forms
from model_training.publish import PublishError, check_writable, publish, write_metadata


def parse_args(argv):
    """Read the command line; argparse itself exits 2 on a malformed one."""
    parser = argparse.ArgumentParser(
        prog="python -m model_training.train",
        description="Train the image classifier and publish it as models/<name>/<version>/.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", help="folder of class subfolders of images")
    source.add_argument("--dataset", choices=datasets.KERAS_DATASETS,
                        help="a keras.datasets dataset (downloaded once)")
    parser.add_argument("--test-dir", help="folder of class subfolders used only for the test")
    parser.add_argument("--output", default="models", help="models folder (default: models)")
    parser.add_argument("--name", help="model name (default: from the dataset or folder)")
    parser.add_argument("--epochs", type=positive_int, default=30, help="maximum epochs (30)")
    parser.add_argument("--batch-size", type=positive_int, default=256, help="batch size (256)")
    parser.add_argument("--patience", type=positive_int, default=6,
                        help="epochs without a better validation loss before stopping (6)")
    parser.add_argument("--learning-rate", type=positive_float, default=2e-3,
                        help="peak Adam learning rate (0.002)")
    parser.add_argument("--width", type=positive_int, default=32,
                        help="filters in the first convolution; later ones are multiples (32)")
    parser.add_argument("--image-size", type=positive_int,
                        help="side of the square model input in pixels (default: from the data)")
    parser.add_argument("--color-mode", choices=("rgb", "grayscale"),
                        help="model input channels (default: from the data)")
    parser.add_argument("--validation-split", type=fraction, default=0.05,
                        help="fraction of the training images for early stopping (0.05)")
    parser.add_argument("--test-split", type=fraction, default=0.1,
                        help="fraction held out for the test when there is no test set (0.1)")
    parser.add_argument("--precision", choices=("auto", "float32", "mixed_bfloat16"),
                        default="auto", help="training arithmetic (auto: bfloat16 where the CPU has it)")
    parser.add_argument("--seed", type=int, default=1337, help="random seed (1337)")
    args = parser.parse_args(argv)
    if args.test_dir and not args.data_dir:
        parser.error("--test-dir goes with --data-dir")
    if args.validation_split == 0:
        parser.error("--validation-split must be above 0: early stopping watches it")
    if args.test_split == 0 and not (args.test_dir or args.dataset):
        parser.error("--test-split must be above 0 unless --test-dir gives a test set")
    return args


def positive_int(text):
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def positive_float(text):
    """An argparse type: a number above 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def fraction(text):
    """An argparse type: a number in [0, 1)."""
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def default_name(args):
    """Name the model after its dataset or data folder."""
    if args.name:
        return args.name
    if args.dataset:
        return args.dataset
    folder = os.path.basename(os.path.normpath(args.data_dir))
    if folder in ("train", "training"):
        folder = os.path.basename(os.path.dirname(os.path.normpath(args.data_dir)))
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", folder).strip("-.") or "model"


def choose_precision(requested):
    """Use bfloat16 only where the CPU computes it natively; elsewhere it is slower."""
    if requested != "auto":
        return requested
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as file:
            flags = file.read()
    except OSError:
        return "float32"
    return "mixed_bfloat16" if re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) else "float32"


def load_data(args):
    """Return (train, validation, test, skipped files) as the arguments ask."""
    channels = {"rgb": 3, "grayscale": 1, None: None}[args.color_mode]
    if args.dataset:
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


def train(args, argv):
    """Train, evaluate and publish; return (published folder, metadata)."""
    name = default_name(args)
    model_dir = os.path.join(args.output, name)
    check_writable(model_dir)
    train_set, validation_set, test_set, skipped = load_data(args)
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s), e.g. {skipped[0]}", file=sys.stderr)

    import keras
    import tensorflow as tf

    from model_training import evaluate
    from model_training.model import compile_model, make_model

    keras.utils.set_random_seed(args.seed)
    precision = choose_precision(args.precision)
    keras.mixed_precision.set_global_policy(precision)
    input_shape = train_set.images.shape[1:]
    num_classes = len(train_set.class_names)
    steps_per_epoch = -(-len(train_set.labels) // args.batch_size)
    # Batch-norm statistics settle in about 1 / (1 - momentum) steps: short runs need a
    # faster moving average, or their inference-mode statistics are still the initial ones.
    momentum = 0.99 if steps_per_epoch * args.epochs >= 1000 else 0.9
    model = make_model(input_shape, num_classes, width=args.width, batch_norm_momentum=momentum)

    warmup_steps = min(2, args.epochs) * steps_per_epoch
    # A short warm-up, then a cosine decay to zero over the planned epochs.
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=args.learning_rate / 10,
        decay_steps=max(1, args.epochs * steps_per_epoch - warmup_steps),
        warmup_target=args.learning_rate, warmup_steps=warmup_steps)
    compile_model(model, schedule)
    model.summary(print_fn=lambda line, **kwargs: print(line))

    # The arrays are already decoded in memory; shuffle each epoch and keep the CPU fed.
    training_data = (tf.data.Dataset.from_tensor_slices((train_set.images, train_set.labels))
                     .shuffle(len(train_set.labels), seed=args.seed, reshuffle_each_iteration=True)
                     .batch(args.batch_size).prefetch(tf.data.AUTOTUNE))
    validation_data = (tf.data.Dataset.from_tensor_slices((validation_set.images, validation_set.labels))
                       .batch(args.batch_size).prefetch(tf.data.AUTOTUNE))
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=args.patience, restore_best_weights=True, verbose=1)
    started = time.monotonic()
    history = model.fit(training_data, validation_data=validation_data, epochs=args.epochs,
                        callbacks=[early_stopping], shuffle=False,
                        verbose=2 if not sys.stdout.isatty() else 1)
    seconds = time.monotonic() - started
    epochs_run = len(history.history["loss"])
    best_epoch = int(min(range(epochs_run), key=lambda i: history.history["val_loss"][i])) + 1

    # Serve a float32 copy: it runs everywhere, and it carries no optimizer state.
    keras.mixed_precision.set_global_policy("float32")
    serving_model = make_model(input_shape, num_classes, width=args.width,
                               batch_norm_momentum=momentum)
    serving_model.set_weights(model.get_weights())
    metrics = evaluate.evaluate(serving_model, test_set)

    metadata = {
        "name": name,
        "version": None,
        "classes": train_set.class_names,
        "input": {"height": int(input_shape[0]), "width": int(input_shape[1]),
                  "channels": int(input_shape[2])},
        "metrics": metrics,
        "dataset": {
            "source": f"keras.datasets.{args.dataset}" if args.dataset else args.data_dir,
            "test_source": ("official test split" if args.dataset else
                            args.test_dir or f"held out {args.test_split:.0%} of the data"),
            "train_images": int(len(train_set.labels)),
            "validation_images": int(len(validation_set.labels)),
            "test_images": int(len(test_set.labels)),
            "skipped_files": len(skipped),
        },
        "training": {
            "command": "python -m model_training.train " + shlex.join(argv),
            "epochs_run": epochs_run,
            "best_epoch": best_epoch,
            "seconds": round(seconds, 1),
            "early_stopping": {"monitor": "val_loss", "patience": args.patience,
                               "restore_best_weights": True,
                               "stopped_early": epochs_run < args.epochs},
            "max_epochs": args.epochs,
            "batch_size": args.batch_size,
            "optimizer": "adam",
            "learning_rate": {"peak": args.learning_rate, "schedule": "warmup + cosine decay"},
            "precision": precision,
            "batch_norm_momentum": momentum,
            "seed": args.seed,
            "parameters": int(serving_model.count_params()),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s)",
        },
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "framework": {"tensorflow": tf.__version__, "keras": keras.__version__,
                      "python": platform.python_version()},
    }

    def write_files(folder, version):
        metadata["version"] = version
        serving_model.save(os.path.join(folder, "model.keras"))
        metadata["serving"] = export_serving_forms(serving_model, test_set.images, folder)
        write_metadata(folder, metadata)
        evaluate.plot_training_curves(history.history, os.path.join(folder, "training-curves.png"))
        evaluate.plot_confusion_matrix(metrics["confusion_matrix"], train_set.class_names,
                                       os.path.join(folder, "confusion-matrix.png"))

    folder, _ = publish(model_dir, write_files)
    return folder, metadata


def main(argv=None):
    """Run the command line; errors a user can fix end with one line and exit status 2."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        folder, metadata = train(args, argv)
    except (datasets.DataError, PublishError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing was published", file=sys.stderr)
        return 130
    print(f"published: {folder}")
    print(f"test accuracy: {metadata['metrics']['test_accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
