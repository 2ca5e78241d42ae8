"""The release gate: a newly published version replaces stable only if it is no worse.

Both versions classify the same held-out images the training run never saw, each image
decoded from the same bytes by the service's own decoder to each model's own input
size, and run by the LiteRT runtime the api serves them with: what is compared is what
clients would get. The new version passes when its accuracy is at least stable's minus
the margin. A version whose classes differ from stable's does not pass unless that is
asked for, since clients may rely on the labels. The first version of a model passes.
The verdict line also gives both versions' expected calibration error (ECE, 15 bins) on
those images, for a person to read; it does not decide.
"""

import io
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from model_training.calibration import expected_calibration_error
from model_training.data import MAX_TRAINING_PIXELS, LabelledImages
from service.models.inference import ModelLoadError, ServingModel
from service.runtime.images import decode_image

# The exit status of a training run whose new version the gate refused.
REFUSED = 3
# The default margin: a retrain may lose up to one point of accuracy to run-to-run noise
# (the same recipe twice on CIFAR-10 differs by a few tenths) and still be promoted.
DEFAULT_MARGIN = 0.01
BATCH = 256


@dataclass(frozen=True)
class Verdict:
    """The gate's decision on `version`, against `stable_version` (None for a first version)."""

    version: int
    accuracy: float
    stable_version: int | None
    stable_accuracy: float | None
    margin: float
    passed: bool
    reason: str
    ece: float | None = None
    stable_ece: float | None = None

    def line(self) -> str:
        """The decision in one line, both accuracies in it."""
        if self.stable_version is None:
            return (f"release gate: version {self.version} is the model's first "
                    f"({self.accuracy:.4f}{_ece(self.ece)})")
        return (f"release gate: version {self.version} {self.accuracy:.4f}{_ece(self.ece)} "
                f"against stable version {self.stable_version} {self.stable_accuracy:.4f}"
                f"{_ece(self.stable_ece)} (margin {self.margin:g}): "
                f"{'passed' if self.passed else 'refused, ' + self.reason}")


def _ece(ece: float | None) -> str:
    """A version's ECE as the verdict line gives it."""
    return "" if ece is None else f", ECE {ece:.4f}"


def load(model_dir: str, version: int) -> ServingModel | None:
    """One version as the service loads it, or None when it does not load."""
    try:
        return ServingModel(os.path.join(model_dir, str(version)), warm_batch_size=BATCH)
    except ModelLoadError:
        return None


def held_out_images(test_set: LabelledImages) -> list[bytes]:
    """The test images as encoded files: the files themselves, or lossless PNGs of arrays."""
    if test_set.sources is not None:
        encoded = []
        for path in test_set.sources:
            with open(path, "rb") as file:
                encoded.append(file.read())
        return encoded
    encoded = []
    for image in test_set.images:
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, "PNG")
        encoded.append(buffer.getvalue())
    return encoded


def score(model: ServingModel, encoded: list[bytes], labels: list[str]) -> tuple[float, float]:
    """(accuracy, ECE) of `model` on the `encoded` images: the share whose top-1 label is the
    true one, and how far its confidence is from its accuracy."""
    height, width, channels = model.input_shape
    probabilities = []
    for start in range(0, len(encoded), BATCH):
        batch = np.stack([decode_image(data, height, width, channels, MAX_TRAINING_PIXELS)
                          for data in encoded[start:start + BATCH]])
        probabilities.append(model.infer(batch))
    probabilities = np.concatenate(probabilities)
    # A label the model does not have counts as wrong (index -1 is never its answer).
    truth = np.array([model.classes.index(label) if label in model.classes else -1
                      for label in labels])
    accuracy = float((probabilities.argmax(axis=1) == truth).mean())
    return accuracy, expected_calibration_error(probabilities, truth)


def judge(model_dir: str, version: int, stable: int | None, test_set: LabelledImages,
          margin: float = DEFAULT_MARGIN, allow_class_change: bool = False) -> Verdict:
    """Compare `version` with `stable` on the held-out `test_set`; say whether it passes."""
    encoded = held_out_images(test_set)
    labels = [test_set.class_names[index] for index in test_set.labels]
    new = load(model_dir, version)
    if new is None:
        raise ModelLoadError(f"the new version {version} does not load")
    new_accuracy, new_ece = score(new, encoded, labels)
    old = load(model_dir, stable) if stable is not None and stable != version else None
    if old is None:
        return Verdict(version, new_accuracy, None, None, margin, True, "", new_ece)
    old_accuracy, old_ece = score(old, encoded, labels)
    both = {"ece": new_ece, "stable_ece": old_ece}
    if new.classes != old.classes and not allow_class_change:
        return Verdict(version, new_accuracy, stable, old_accuracy, margin, False,
                       f"its classes differ from stable's ({class_change(old, new)}; pass "
                       "--allow-class-change to release it anyway)", **both)
    if new_accuracy < old_accuracy - margin:
        return Verdict(version, new_accuracy, stable, old_accuracy, margin, False,
                       "it is worse than stable by more than the margin", **both)
    return Verdict(version, new_accuracy, stable, old_accuracy, margin, True, "", **both)


def class_change(old: ServingModel, new: ServingModel) -> str:
    """How `new`'s class list differs from `old`'s, in words."""
    added = [name for name in new.classes if name not in old.classes]
    removed = [name for name in old.classes if name not in new.classes]
    if not added and not removed:
        return "the same classes in another order"
    return "; ".join(part for part in (f"added {', '.join(added)}" if added else "",
                                       f"removed {', '.join(removed)}" if removed else "") if part)
