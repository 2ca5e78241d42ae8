"""Is int8 faster than float32 here? The recipe's network through LiteRT/XNNPACK.

Post-training quantization could let a wider, more accurate network serve at the narrow
one's cost, if int8 ran several times faster than float32. With --widths, the networks are
built (whitened stem, Dirac start) but not trained: speed does not depend on the weights'
values. With --model, a published version's model.keras is quantized (calibrated on its
validation images) and its accuracy and top-1 agreement with float32 are measured on its
held-out test split. Each form runs batches of 32 real images on the service's LiteRunner,
in alternating rounds; prints one JSON line per round and form.

    python -m benchmarks.int8_speed --image-list FILE --widths 32 64 --threads 2 --rounds 3
    python -m benchmarks.int8_speed --image-list FILE --model models/cifar10/2 FOLDER --data-dir DIR
"""

import argparse
import json
import time

import numpy as np

from benchmarks.sample import read_images
from service.models.inference import LiteRunner
from service.runtime.images import decode_image

BATCH = 32


def untrained(width: int, images: np.ndarray):
    """The recipe's network at `width`, whitened on `images`, not trained."""
    from model_training.model import identity_init, make_model, whiten

    model = make_model(images.shape[1:], 10, width=width)
    whiten(model, images)
    identity_init(model)
    return model


def converted(model, images: np.ndarray) -> dict[str, bytes]:
    """`model` as float32, int8-weight and full-int8 model.tflite contents; the int8
    activation ranges come from `images`."""
    import tensorflow as tf

    from model_training.export import serving_function

    serve = serving_function(model)

    def convert(**options):
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [serve.get_concrete_function()], model)
        for key, value in options.items():
            setattr(converter, key, value)
        return converter.convert()

    def representative():
        for start in range(0, 256, BATCH):
            yield [images[start:start + BATCH]]

    return {"float32": convert(),
            "int8 weights": convert(optimizations=[tf.lite.Optimize.DEFAULT]),
            "int8": convert(optimizations=[tf.lite.Optimize.DEFAULT],
                            representative_dataset=representative)}


def images_per_second(run: LiteRunner, images: np.ndarray, seconds: float) -> float:
    """Batches of 32 for `seconds`; images per second."""
    run(images[:BATCH])
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        start = (done * BATCH) % (len(images) - BATCH)
        run(images[start:start + BATCH])
        done += 1
    return done * BATCH / (time.perf_counter() - started)


def published_runners(folders: list[str], data_dir: str | None, threads: int) -> dict:
    """Runners of every form of each published version; each form's accuracy is printed."""
    import keras

    import model_training.model  # noqa: F401  (registers the custom layers)
    from model_training.ood import version_images

    runners = {}
    for folder in folders:
        with open(f"{folder}/metadata.json", encoding="utf-8") as file:
            validation, test = version_images(json.load(file), data_dir)
        model = keras.saving.load_model(f"{folder}/model.keras", compile=False)
        own = {(folder, form): LiteRunner(content, BATCH, threads)
               for form, content in converted(model, validation.images).items()}
        report_accuracy(own, test)
        runners.update(own)
    return runners


def report_accuracy(runners: dict, test) -> None:
    """Each form's accuracy on the test split, and its top-1 agreement with float32's."""
    answers = {key: np.concatenate([run(test.images[start:start + BATCH])
                                    for start in range(0, len(test.labels), BATCH)]).argmax(1)
               for key, run in runners.items()}
    reference = next(answer for (_, form), answer in answers.items() if form == "float32")
    for (name, form), answer in answers.items():
        print(json.dumps({"model": name, "form": form, "test_images": len(test.labels),
                          "accuracy": round(float((answer == test.labels).mean()), 4),
                          "top1_agreement_with_float32": round(
                              float((answer == reference).mean()), 4)}), flush=True)


def main(argv: list[str] | None = None) -> None:
    """Convert, then time every width and form in alternating rounds."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-list", required=True, help="a file naming one image per line")
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--model", nargs="+", help="published version folders (of one training "
                        "folder's split): quantize each, and measure accuracy on its held-out "
                        "test split too")
    parser.add_argument("--data-dir", help="with --model: the folder it was trained on")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args(argv)
    with open(args.image_list, encoding="utf-8") as file:
        paths = [line.strip() for line in file if line.strip()]
    images = np.stack([decode_image(data, 32, 32, 3, 10**8) for data in read_images(paths)])
    if args.model:
        runners = published_runners(args.model, args.data_dir, args.threads)
    else:
        runners = {(width, form): LiteRunner(content, BATCH, args.threads)
                   for width in args.widths
                   for form, content in converted(untrained(width, images), images).items()}
    for number in range(1, args.rounds + 1):
        for (width, form), run in runners.items():
            print(json.dumps({"round": number, "network": width, "form": form,
                              "images_per_second": round(
                                  images_per_second(run, images, args.seconds), 1)}), flush=True)


if __name__ == "__main__":
    main()
