"""The in-process limit: decode plus model call, no HTTP; prints one JSON object.

The fastest path known for the model: its model.tflite on LiteRT/XNNPACK with every core.
"""

import argparse
import json
import statistics
import time

import numpy as np

from benchmarks.sample import read_images
from service.config import Settings
from service.models.inference import ServingModel
from service.runtime.images import decode_image


def measure(model_path, image_paths, batch_size, seconds, threads=0):
    """Time single-image and batched decode + infer on the service's own inference path."""
    model = ServingModel(model_path, warm_batch_size=batch_size, threads=threads)
    images = read_images(image_paths)
    max_pixels = Settings().max_image_pixels

    def decode(data):
        return decode_image(data, *model.input_shape, max_pixels)

    single = []
    deadline = time.perf_counter() + seconds
    index = 0
    while time.perf_counter() < deadline or len(single) < 50:
        started = time.perf_counter()
        model.infer(decode(images[index % len(images)])[np.newaxis])
        single.append(time.perf_counter() - started)
        index += 1
    # The first calls still warm caches; leave them out.
    single = single[10:]

    batches = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or batches < 10:
        first = (batches * batch_size) % len(images)
        chunk = [images[(first + offset) % len(images)] for offset in range(batch_size)]
        model.infer(np.stack([decode(data) for data in chunk]))
        batches += 1
    elapsed = time.perf_counter() - started
    return {"single_p50_ms": statistics.median(single) * 1000,
            "single_mean_ms": statistics.fmean(single) * 1000,
            "single_count": len(single),
            "batch_size": batch_size,
            "batched_images_per_second": batches * batch_size / elapsed}


def main(argv=None):
    """Measure and print the result as JSON on one line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.in_process", description=__doc__)
    parser.add_argument("--model", required=True, help="a model version folder")
    parser.add_argument("--image-list", required=True, help="a file naming one image per line")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0, help="time for each measurement")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads for one model call (0, the default: every core)")
    args = parser.parse_args(argv)
    with open(args.image_list, encoding="utf-8") as file:
        paths = [line.strip() for line in file if line.strip()]
    result = measure(args.model, paths, args.batch_size, args.seconds, args.threads)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
