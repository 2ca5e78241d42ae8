"""Training speed of make_model on this machine: python -m benchmarks.training_speed --help."""

import argparse
import itertools
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from model_training.model import compile_model, identity_init, make_model, whiten  # noqa: E402


def seconds_per_image(width, precision, batch_size, steps):
    """Average training time per image over `steps` batches of random CIFAR-sized pixels."""
    keras.mixed_precision.set_global_policy(precision)
    generator = np.random.default_rng(0)
    images = generator.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8)
    labels = generator.integers(0, 10, batch_size)
    model = make_model((32, 32, 3), 10, width=width)
    whiten(model, images)
    identity_init(model)
    compile_model(model, 0.1)
    for _ in range(3):
        model.train_on_batch(images, labels)
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, labels)
    return (time.perf_counter() - started) / (steps * batch_size), model.count_params()


def main():
    """Print one row per combination: milliseconds per image and seconds per CIFAR-10 epoch."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--widths", type=int, nargs="+", default=[64])
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--epoch-images", type=int, default=42_750,
                        help="images per epoch for the projection (the shipped model's split)")
    args = parser.parse_args()
    print("| width | parameters | precision | batch | ms/image | s/epoch |")
    print("| ---: | ---: | --- | ---: | ---: | ---: |")
    for width, precision, batch_size in itertools.product(args.widths, args.precisions,
                                                          args.batch_sizes):
        per_image, parameters = seconds_per_image(width, precision, batch_size, args.steps)
        print(f"| {width} | {parameters:,} | {precision} | {batch_size} | {per_image * 1000:.2f} "
              f"| {per_image * args.epoch_images:.0f} |", flush=True)


if __name__ == "__main__":
    main()
