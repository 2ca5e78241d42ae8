"""Load labelled images into memory and split them for training, validation and test."""

import collections
import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from service.runtime.images import ImageError, decode_image

# Training reads pictures of any size, but not decompression bombs.
MAX_TRAINING_PIXELS = 100_000_000

KERAS_DATASETS = ("cifar10", "fashion_mnist", "mnist")
# Data sets that ship inside a package, so they need no download: scikit-learn's 1,797
# handwritten digits, 8x8 grey pixels of 0-16 (from the UCI "optdigits" set).
PACKAGED_DATASETS = ("digits",)

CLASS_NAMES = {
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"],
    "fashion_mnist": ["t-shirt", "trouser", "pullover", "dress", "coat",
                      "sandal", "shirt", "sneaker", "bag", "ankle_boot"],
    "mnist": [str(digit) for digit in range(10)],
    "digits": [str(digit) for digit in range(10)],
}


class DataError(Exception):
    """The data cannot be used for training; the message says why and what to do."""


@dataclass
class LabelledImages:
    """Images as a uint8 array (count, height, width, channels) with integer labels.

    `sources`, for images read from files, holds each one's path: the release gate decodes
    the files again for each model it compares, at that model's own input size.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list
    skipped: list = field(default_factory=list)
    sources: np.ndarray | None = None


def list_image_folder(data_dir: str | Sequence[str]) -> tuple[list[str], np.ndarray, list[str]]:
    """Return (paths, labels, class_names) for a folder of class subfolders, or for several
    (a base set and the feedback exported from the prediction store, say): their classes are
    the union of the folders' class subfolders, and a folder may lack some."""
    folders = [data_dir] if isinstance(data_dir, str) else list(data_dir)
    named = " + ".join(folders)
    for folder in folders:
        if not os.path.isdir(folder):
            raise DataError(f"data folder {folder!r} does not exist or is not a folder")
    class_names = sorted({entry.name for folder in folders for entry in os.scandir(folder)
                          if entry.is_dir() and not entry.name.startswith(".")})
    paths, labels = [], []
    for folder in folders:
        for label, class_name in enumerate(class_names):
            for root, dirs, files in os.walk(os.path.join(folder, class_name)):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for file_name in sorted(files):
                    if not file_name.startswith("."):
                        paths.append(os.path.join(root, file_name))
                        labels.append(label)
    if not paths:
        raise DataError(f"data folder {named!r} holds no images in class subfolders "
                        "(expected DIR/<class>/<image files>)")
    used = sorted({class_names[label] for label in labels})
    if len(used) < 2:
        raise DataError(f"data folder {named!r} has images of {len(used)} class(es); "
                        "a classifier needs at least two class subfolders with images")
    return paths, np.array(labels, dtype=np.int32), class_names


def guess_input_shape(paths: list[str], image_size: int | None = None,
                      channels: int | None = None, sample: int = 50) -> tuple[int, int]:
    """Choose the model input from the first images: their commonest side, and grey or colour."""
    from PIL import Image

    sides, modes = collections.Counter(), set()
    for path in paths[:sample]:
        try:
            with Image.open(path) as image:
                sides[min(image.size)] += 1
                modes.add(image.mode)
        except Exception:
            continue
    if image_size is None:
        image_size = min(max(sides.most_common(1)[0][0] if sides else 64, 16), 128)
    if channels is None:
        grey = modes and modes <= {"1", "L", "I", "I;16", "F"}
        channels = 1 if grey else 3
    return image_size, channels


def load_image_folder(data_dir: str | Sequence[str], image_size: int | None = None,
                      channels: int | None = None) -> LabelledImages:
    """Decode every picture of one or more class-subfolder trees; unreadable files are skipped
    and listed. A file whose bytes came before (in another folder, say) counts once, with the
    label of its last folder: a correction exported from feedback overrides the base set."""
    paths, labels, class_names = list_image_folder(data_dir)
    image_size, channels = guess_input_shape(paths, image_size, channels)

    def read(path):
        try:
            with open(path, "rb") as file:
                data = file.read()
            return (decode_image(data, image_size, image_size, channels, MAX_TRAINING_PIXELS),
                    hashlib.sha256(data).digest())
        except (OSError, ImageError):
            return None, None

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        decoded, digests = zip(*pool.map(read, paths, chunksize=256), strict=True)
    last = {digest: index for index, digest in enumerate(digests) if digest is not None}
    keep = np.array([image is not None and last[digest] == index for index, (image, digest)
                     in enumerate(zip(decoded, digests, strict=True))], dtype=bool)
    skipped = [path for path, image in zip(paths, decoded, strict=True) if image is None]
    if not keep.any():
        raise DataError(f"none of the {len(paths)} files under {data_dir!r} is a readable image")
    decoded = [image for image, kept in zip(decoded, keep, strict=True) if kept]
    images = np.stack(decoded)
    return LabelledImages(images, labels[keep], class_names, skipped,
                          np.array(paths, dtype=object)[keep])


def load_keras_dataset(name: str) -> tuple[LabelledImages, LabelledImages]:
    """Return (train, test) from keras.datasets, downloading them once."""
    import keras

    try:
        (train_x, train_y), (test_x, test_y) = getattr(keras.datasets, name).load_data()
    except Exception as error:
        raise DataError(f"could not download the {name} dataset ({type(error).__name__}); "
                        "this needs the internet once. Offline, pass --data-dir with a "
                        "folder of class subfolders instead") from None

    def as_images(x, y):
        x = x if x.ndim == 4 else x[..., np.newaxis]
        return LabelledImages(x.astype(np.uint8), y.reshape(-1).astype(np.int32), CLASS_NAMES[name])

    return as_images(train_x, train_y), as_images(test_x, test_y)


def load_packaged_dataset(name: str) -> LabelledImages:
    """A data set shipped inside a package (no test split of its own): scikit-learn's digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 0-16 grey levels to the 0-255 pixels every model here takes, one channel.
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., np.newaxis]
    return LabelledImages(images, digits.target.astype(np.int32), CLASS_NAMES[name])


def split(data: LabelledImages, fraction: float,
          seed: int) -> tuple[LabelledImages, LabelledImages]:
    """Split off a random `fraction` of the images as a second set: (rest, part)."""
    count = len(data.labels)
    order = np.random.default_rng(seed).permutation(count)
    part_size = int(round(count * fraction))
    if fraction > 0 and (part_size < 1 or part_size >= count):
        raise DataError(f"{count} images are too few to split off a fraction of {fraction}")
    part, rest = order[:part_size], order[part_size:]

    def subset(indices):
        sources = data.sources[indices] if data.sources is not None else None
        return LabelledImages(data.images[indices], data.labels[indices], data.class_names,
                              sources=sources)

    return subset(rest), subset(part)
