"""The "unknown" answer: out-of-distribution sets, AUROC of the top probability, the threshold.

A model answers "unknown" when its top probability is below its `min_confidence`. How well
that separates the model's own held-out images from pictures of none of its classes is
measured as an AUROC per out-of-distribution (OOD) set, never pooled (noise and solid
colours are easy, and pooling them would flatter the figure). The sets need no download:

- digits: scikit-learn's 8x8 handwritten digits, scaled to the model's input (left out
  for a model of digits);
- noise: uniform random pixels;
- solid colours: one random colour per picture;
- photos: scikit-image's sample pictures of things outside CIFAR-10's classes (not
  `chelsea`/`cat`, a cat, nor `horse`), each whole and as five crops of half its side.

Each set is split in two at random: the threshold is chosen on the first halves and the
model's validation split, and reported on the second halves and its test split.

Reproduce a version's figures with the served model (LiteRT, as the api runs it):
    python -m model_training.ood models/cifar10/3 --data-dir /tmp/data/cifar10/train
"""

import io
import json
import os
import shlex
import sys
from collections.abc import Callable

import numpy as np
from PIL import Image

from model_training import data as datasets
from model_training.data import MAX_TRAINING_PIXELS
from service.runtime.images import decode_image

SET_SIZE = 500
# skimage.data pictures that need no download; chelsea/cat (a cat) and horse (a CIFAR
# class) are left out, as are generated patterns (binary_blobs).
PHOTOS = ("astronaut", "brick", "camera", "cell", "checkerboard", "clock", "coffee", "coins",
          "colorwheel", "grass", "gravel", "hubble_deep_field", "immunohistochemistry",
          "logo", "microaneurysms", "moon", "page", "retina", "rocket", "stereo_motorcycle",
          "text")
# At most this share of the validation split may be marked unknown: the threshold is for
# pictures of other things, and should not cost much on the model's own classes.
MAX_IN_DISTRIBUTION_UNKNOWN = 0.05
THRESHOLDS = np.arange(100) / 100


def _encoded(pixels: np.ndarray) -> bytes:
    """A picture as lossless PNG bytes, for the service's own decoder."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _decoded(pictures: list[np.ndarray], input_shape: tuple[int, int, int]) -> np.ndarray:
    """Pictures of any size scaled to the model's input as the service decodes uploads."""
    height, width, channels = input_shape
    return np.stack([decode_image(_encoded(picture), height, width, channels,
                                  MAX_TRAINING_PIXELS) for picture in pictures])


def photo_pictures() -> list[np.ndarray]:
    """scikit-image's sample photos (PHOTOS), each whole and as five half-side crops."""
    import skimage.data

    pictures = []
    for name in PHOTOS:
        picture = getattr(skimage.data, name)()
        picture = picture[0] if isinstance(picture, tuple) else picture  # a stereo pair
        picture = picture[..., :3] if picture.ndim == 3 else picture      # drop alpha
        picture = np.asarray(picture, dtype=np.uint8)
        rows, columns = picture.shape[:2]
        half_rows, half_columns = rows // 2, columns // 2
        corners = [(0, 0), (0, half_columns), (half_rows, 0), (half_rows, half_columns),
                   (rows // 4, columns // 4)]
        pictures.append(picture)
        pictures.extend(picture[top:top + half_rows, left:left + half_columns]
                        for top, left in corners)
    return pictures


def ood_sets(input_shape: tuple[int, int, int], seed: int,
             own_dataset: str | None = None) -> dict[str, np.ndarray]:
    """Every OOD set at the model's input size, as uint8 arrays; `own_dataset` is left out."""
    from sklearn.datasets import load_digits

    height, width, channels = input_shape
    rng = np.random.default_rng(seed)
    sets = {}
    if own_dataset != "digits":
        digits = np.round(load_digits().images * (255 / 16)).astype(np.uint8)
        chosen = rng.choice(len(digits), SET_SIZE, replace=False)
        sets["digits"] = _decoded([digits[index] for index in chosen], input_shape)
    sets["noise"] = rng.integers(0, 256, (SET_SIZE, height, width, channels), dtype=np.uint8)
    colours = rng.integers(0, 256, (SET_SIZE, 1, 1, 3), dtype=np.uint8)
    solid = np.broadcast_to(colours, (SET_SIZE, height, width, 3))
    sets["solid colours"] = (solid if channels == 3 else
                             _decoded(list(np.ascontiguousarray(solid)), input_shape))
    try:
        sets["photos"] = _decoded(photo_pictures(), input_shape)
    except ImportError:
        pass  # scikit-image is a test requirement only; the run says the set is missing
    return sets


def halves(images: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A set split in two at random: (choice half, report half)."""
    order = np.random.default_rng(seed).permutation(len(images))
    middle = len(images) // 2
    return images[order[:middle]], images[order[middle:]]


def auroc(in_distribution: np.ndarray, out_of_distribution: np.ndarray) -> float:
    """AUROC of the top probability telling in-distribution (positive) from OOD pictures."""
    from sklearn.metrics import roc_auc_score

    scores = np.concatenate([in_distribution, out_of_distribution])
    truth = np.concatenate([np.ones(len(in_distribution)), np.zeros(len(out_of_distribution))])
    return round(float(roc_auc_score(truth, scores)), 4)


def choose_threshold(validation: np.ndarray, ood: dict[str, np.ndarray],
                     max_in_distribution_unknown: float = MAX_IN_DISTRIBUTION_UNKNOWN) -> float:
    """The min_confidence that best tells the sets apart, at a bounded cost to known images.

    `validation` and each of `ood`'s values are top probabilities. Among thresholds that mark
    at most `max_in_distribution_unknown` of the validation images unknown, the one with the
    largest (mean over OOD sets of the share marked unknown) - (validation share marked
    unknown), each set weighing the same; the lowest such threshold on a tie.
    """
    ceiling = float(np.quantile(validation, max_in_distribution_unknown, method="lower"))
    # Whole hundredths, a number a person can reason about, below 1 (where float32
    # probabilities saturate). Strictly below the threshold is unknown: at the ceiling
    # itself, at most the allowed share of validation images is below it.
    candidates = THRESHOLDS[THRESHOLDS <= ceiling]
    best, best_score = 0.0, -np.inf
    for threshold in candidates:
        caught = np.mean([(scores < threshold).mean() for scores in ood.values()])
        score = caught - (validation < threshold).mean()
        if score > best_score + 1e-12:
            best, best_score = float(threshold), score
    return round(best, 2)


def measure(test: np.ndarray, ood: dict[str, np.ndarray], threshold: float) -> dict:
    """AUROC per OOD set against `test`, and the share of each set marked unknown."""
    report = {"test": {"images": int(len(test)),
                       "share_unknown": round(float((test < threshold).mean()), 4)}}
    for name, scores in ood.items():
        report[name] = {"images": int(len(scores)), "auroc": auroc(test, scores),
                        "share_unknown": round(float((scores < threshold).mean()), 4)}
    return report


def top_probabilities(predict: Callable[[np.ndarray], np.ndarray], validation: np.ndarray,
                      test: np.ndarray, input_shape: tuple[int, int, int], seed: int,
                      own_dataset: str | None = None) -> dict:
    """The top probability of every picture the threshold is chosen and reported on."""
    def top(images):
        return predict(images).max(axis=1)

    choice, report = {}, {}
    for name, images in ood_sets(input_shape, seed, own_dataset).items():
        first, second = halves(images, seed)
        choice[name], report[name] = top(first), top(second)
    return {"validation": top(validation), "test": top(test), "choice": choice,
            "report": report}


def unknown_answer(predict: Callable[[np.ndarray], np.ndarray], validation: np.ndarray,
                   test: np.ndarray, input_shape: tuple[int, int, int], seed: int,
                   own_dataset: str | None = None) -> tuple[float, dict]:
    """Choose min_confidence and report it: (threshold, metadata.json's "unknown" entry).

    `predict` maps a uint8 batch to probabilities (the served model); `validation` and
    `test` are the model's own held-out images.
    """
    scores = top_probabilities(predict, validation, test, input_shape, seed, own_dataset)
    threshold = choose_threshold(scores["validation"], scores["choice"])
    missing = ({} if "photos" in scores["report"]
               else {"left_out": "photos: scikit-image is not installed"})
    return threshold, {**missing,
        "min_confidence": threshold,
        "rule": ("largest mean share of OOD pictures marked unknown minus the share of "
                 "validation images, with at most "
                 f"{MAX_IN_DISTRIBUTION_UNKNOWN:.0%} of validation images marked unknown"),
        "chosen_on": "the validation split and a random half of each OOD set",
        "reported_on": "the test split and the other half of each OOD set",
        "seed": seed,
        "report": measure(scores["test"], scores["report"], threshold)}


def version_images(metadata: dict, data_dir: str | None) -> tuple:
    """A version's (validation, test) LabelledImages, split as its training run split them."""
    from model_training import train

    # The command begins "python -m model_training.train".
    args = train.parse_args(shlex.split(metadata["training"]["command"])[3:])
    if data_dir:
        args.data_dir, args.dataset = data_dir, None
    _, validation, test, _ = train.load_data(args)
    return validation, test


def main(argv: list[str] | None = None) -> int:
    """Recompute a published version's unknown-answer figures with its served model."""
    from model_training.export import version_folder_parser
    from service.models.inference import ServingModel

    parser = version_folder_parser("python -m model_training.ood", __doc__,
                                   "the folder it was trained on, when not where "
                                   "metadata.json says")
    parser.add_argument("--thresholds", type=float, nargs="*", default=[],
                        help="also report the shares marked unknown at these thresholds")
    args = parser.parse_args(argv)
    try:
        with open(os.path.join(args.folder, "metadata.json"), encoding="utf-8") as file:
            metadata = json.load(file)
        validation, test = version_images(metadata, args.data_dir)
    except (OSError, ValueError, KeyError, datasets.DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    model = ServingModel(args.folder, warm_batch_size=32)
    own = metadata["dataset"]["source"].removeprefix("sklearn.datasets.load_")
    scores = top_probabilities(model.infer, validation.images, test.images, model.input_shape,
                               entry_seed(metadata), own)
    threshold = choose_threshold(scores["validation"], scores["choice"])
    print(json.dumps({"min_confidence_published": metadata.get("min_confidence"),
                      "min_confidence_recomputed": threshold,
                      **measure(scores["test"], scores["report"], threshold)}))
    for other in args.thresholds:
        shares = {name: entry["share_unknown"]
                  for name, entry in measure(scores["test"], scores["report"], other).items()}
        print(json.dumps({"min_confidence": other, "share_unknown": shares}))
    return 0


def entry_seed(metadata: dict) -> int:
    """The seed the version's OOD sets were drawn with."""
    return int(metadata.get("unknown", {}).get("seed", metadata["training"]["seed"]))


if __name__ == "__main__":
    sys.exit(main())
