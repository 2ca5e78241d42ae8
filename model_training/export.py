"""Write a model's serving forms beside model.keras: model.tflite (api), a SavedModel (TF Serving).

Add them to a version folder made before they existed, in place:
    python -m model_training.export models/cifar10/2
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

from model_training import data as datasets
from model_training.publish import PublishError, write_metadata
from service.models.artifact import (
    KERAS_FILE,
    METADATA_FILE,
    SAVED_MODEL_FILE,
    TEMPORARY_PREFIX,
    TFLITE_FILE,
    replace_file,
)
from service.models.inference import LiteRunner

# A converted model that picks another top label for more than 1 image in 1,000 is refused.
MIN_TOP1_AGREEMENT = 0.999
# The SavedModel's signature: uint8 [batch, height, width, channels] in,
# float32 [batch, classes] out.
SIGNATURE = {"signature": "serving_default", "input": "pixels", "output": "probabilities"}


class ExportError(PublishError):
    """The converted model disagrees with the Keras model, so it must not be published."""


def export_serving_forms(model: "keras.Model", images: np.ndarray, folder: str,
                         min_agreement: float = MIN_TOP1_AGREEMENT) -> dict:
    """Convert `model`, check it on uint8 `images`, write both forms to `folder`; return the check.

    Nothing is written when the check fails. The returned dict goes into metadata.json.
    """
    import tensorflow as tf

    serve = serving_function(model)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()],
                                                                model)
    tflite = converter.convert()
    check = compare(model, tflite, images)
    if check["top1_agreement"] < min_agreement:
        raise ExportError(
            f"the converted {TFLITE_FILE} gives the Keras model's top label for only "
            f"{check['top1_agreement']:.2%} of {check['images']} test images (at least "
            f"{min_agreement:.1%} needed; largest probability difference "
            f"{check['max_probability_difference']:.3g}); nothing was published")
    write_saved_model(serve, folder)
    # model.tflite comes last: it is what a running api waits for.
    replace_file(folder, TFLITE_FILE, tflite)
    return {"tflite": {"file": TFLITE_FILE, "input": "uint8 pixels 0-255", **check},
            "saved_model": {"file": SAVED_MODEL_FILE, **SIGNATURE}}


def serving_function(model: "keras.Model") -> "tf.types.experimental.GenericFunction":
    """The model as a tf.function of uint8 pixels, for any batch size: what both forms serve."""
    import tensorflow as tf

    spec = tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.uint8, name=SIGNATURE["input"])

    @tf.function(input_signature=[spec])
    def serve(pixels):
        # The model's own Rescaling layer scales the pixels, as in training.
        return {SIGNATURE["output"]: model(tf.cast(pixels, tf.float32), training=False)}

    return serve


def compare(model, tflite: bytes, images: np.ndarray) -> dict:
    """Top-1 agreement and largest probability difference of the converted model against Keras."""
    if len(images) == 0:
        raise ExportError("there are no test images to check the converted model on")
    expected = model.predict(images, batch_size=256, verbose=0)
    converted = LiteRunner(tflite, max_batch_size=32)(images)
    return {"images": int(len(images)),
            "top1_agreement": round(float((expected.argmax(1) == converted.argmax(1)).mean()), 6),
            "max_probability_difference": float(np.abs(expected - converted).max())}


def write_saved_model(serve: "tf.types.experimental.GenericFunction", folder: str) -> None:
    """Write the SavedModel into `folder` itself (saved_model.pb last), replacing any older one."""
    import keras

    staging = tempfile.mkdtemp(dir=folder, prefix=TEMPORARY_PREFIX)
    try:
        archive = keras.export.ExportArchive()
        # Not archive.track(model): the endpoint's own variables are saved anyway, and
        # tracking the model would store every weight a second time.
        archive.add_endpoint(SIGNATURE["signature"], serve)
        archive.write_out(staging, verbose=False)
        names = sorted(os.listdir(staging), key=lambda name: name == SAVED_MODEL_FILE)
        for name in names:
            source, target = os.path.join(staging, name), os.path.join(folder, name)
            if os.path.isdir(source) and not os.listdir(source):
                continue  # an empty assets/ folder: git would not keep it anyway
            if os.path.isdir(target):
                shutil.rmtree(target)
            os.replace(source, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_images(metadata: dict, data_dir: str | None, max_images: int,
                 seed: int = 0) -> tuple[np.ndarray, str]:
    """Images to check a converted model on (by default its own dataset's), and their source."""
    source = data_dir or metadata.get("dataset", {}).get("source", "")
    size, channels = metadata["input"]["height"], metadata["input"]["channels"]
    if source.startswith("keras.datasets.") and not data_dir:
        images = datasets.load_keras_dataset(source.removeprefix("keras.datasets."))[1].images
        described = f"the official test split of {source}"
    elif data_dir or os.path.isdir(source):
        images = datasets.load_image_folder(source, size, channels).images
        described = f"images from {source}"
    else:
        raise datasets.DataError(f"the images the model was trained on ({source or 'unknown'}) "
                                 "are not here: pass --data-dir with a folder of class "
                                 "subfolders of images like the model's")
    if len(images) > max_images:
        chosen = np.random.default_rng(seed).choice(len(images), max_images, replace=False)
        images = images[np.sort(chosen)]
    return images, f"{len(images)} {described}"


def export_folder(folder: str, data_dir: str | None = None, max_images: int = 5000) -> dict:
    """Add model.tflite and the SavedModel to a published version folder, in place."""
    try:
        with open(os.path.join(folder, METADATA_FILE), encoding="utf-8") as file:
            metadata = json.load(file)
        square = metadata["input"]["height"] == metadata["input"]["width"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PublishError(f"{folder!r} is not a version folder: cannot read {METADATA_FILE} "
                           f"({getattr(error, 'strerror', None) or error})") from None
    if not square:
        raise datasets.DataError("only square model inputs can be checked against an image folder")
    images, described = check_images(metadata, data_dir, max_images)

    import keras

    import model_training.model  # noqa: F401  (registers the custom layers a model may use)

    model = keras.saving.load_model(os.path.join(folder, KERAS_FILE), compile=False)
    serving = export_serving_forms(model, images, folder)
    serving["tflite"]["checked_on"] = described
    metadata["serving"] = serving
    write_metadata(folder, metadata)
    return serving


def version_folder_parser(prog: str, description: str,
                          data_dir_help: str) -> argparse.ArgumentParser:
    """The command line of a tool that works on one published version folder."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="a published version folder, e.g. models/cifar10/3")
    parser.add_argument("--data-dir", help=data_dir_help)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; errors a user can fix end with one line and exit status 2."""
    parser = version_folder_parser(
        "python -m model_training.export", __doc__, "class subfolders of images to check the "
        "converted model on (default: the dataset named in metadata.json, when it is here)")
    parser.add_argument("--max-images", type=int, default=5000,
                        help="check on at most this many of them, drawn at random (5000)")
    args = parser.parse_args(argv)
    try:
        serving = export_folder(args.folder, args.data_dir, args.max_images)
    except (datasets.DataError, PublishError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    check = serving["tflite"]
    print(f"wrote {os.path.join(args.folder, TFLITE_FILE)} and a SavedModel; top-1 agreement "
          f"{check['top1_agreement']:.4f}, largest probability difference "
          f"{check['max_probability_difference']:.2g}, on {check['checked_on']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
