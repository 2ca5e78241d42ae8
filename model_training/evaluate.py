"""Measure a trained model on held-out images and draw the pictures people look at."""

from typing import Any

import numpy as np

from model_training.data import LabelledImages
from service.observability.drift import reference_of


def predict_classes(model: Any, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Return the most probable class index for each image."""
    probabilities = model.predict(images, batch_size=batch_size, verbose=0)
    return probabilities.argmax(axis=1)


def evaluate(model: Any, test: LabelledImages, batch_size: int = 256) -> dict:
    """Return test accuracy, per-class accuracy, the confusion matrix, and the profile of the
    answers that the service's drift gauges compare live answers with
    (service/observability/drift.py)."""
    probabilities = model.predict(test.images, batch_size=batch_size, verbose=0)
    predicted = probabilities.argmax(axis=1)
    count = len(test.class_names)
    confusion = np.zeros((count, count), dtype=np.int64)
    np.add.at(confusion, (test.labels, predicted), 1)
    per_class_totals = confusion.sum(axis=1)
    per_class = {
        name: round(float(confusion[index, index] / per_class_totals[index]), 4)
        for index, name in enumerate(test.class_names) if per_class_totals[index]
    }
    return {
        "test_accuracy": round(float((predicted == test.labels).mean()), 4),
        "test_images": int(len(test.labels)),
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
        "prediction_profile": reference_of(np.asarray(probabilities, dtype=np.float64)),
    }


def plot_training_curves(history: dict[str, list[float]], path: str) -> None:
    """Save loss and accuracy per epoch, training against validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history["loss"]) + 1)
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in ((loss_axis, "loss"), (accuracy_axis, "accuracy")):
        axis.plot(epochs, history[metric], label="training")
        axis.plot(epochs, history[f"val_{metric}"], label="validation")
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_confusion_matrix(confusion: list[list[int]], class_names: list[str],
                          path: str) -> None:
    """Save the confusion matrix as a labelled heat map (rows: true class)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = np.asarray(confusion)
    size = max(5, 0.6 * len(class_names) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(confusion, cmap="Blues")
    axis.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axis.set_yticks(range(len(class_names)), class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    threshold = confusion.max() / 2 if confusion.size else 0
    for row, column in np.ndindex(confusion.shape):
        axis.text(column, row, confusion[row, column], ha="center", va="center", fontsize=8,
                  color="white" if confusion[row, column] > threshold else "black")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
