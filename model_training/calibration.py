"""Honest confidence: fit a temperature, measure calibration, draw the reliability diagram.

Temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural Networks") divides
the log-probabilities by one number T fitted on the validation split to minimise the
negative log-likelihood; the top label never changes. It acts on the probabilities the
model serves (with the mirror averaging, on their mean), so it applies to exactly the
answer clients get, and it is a layer at the end of the served graph: model.keras,
model.tflite and the SavedModel all carry it.
"""

import numpy as np

# Expected calibration error over 15 equal-width confidence bins, as Guo et al. report it.
ECE_BINS = 15
# Probabilities are clipped before the logarithm: a float32 softmax can round to 0.
# TemperatureScaling (model_training/model.py) clips alike.
EPSILON = 1e-12
# The search range of the temperature. The recipe's label smoothing (0.2) makes its
# answers shy by design, so T < 1 is expected; a validation split the model gets all right
# (scikit-learn's digits: 81 images) pushes T towards 0 without end, where float32
# probabilities saturate at 1. A fit at an end of the range is reported as such.
TEMPERATURE_RANGE = (0.25, 4.0)


def scale(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """What TemperatureScaling does, in numpy (float64)."""
    logits = np.log(np.clip(probabilities.astype(np.float64), EPSILON, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exponentials = np.exp(logits)
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log p(true class)."""
    true = probabilities[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(true, EPSILON, 1.0)).mean())


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray,
                     bins: int = ECE_BINS) -> list[dict]:
    """Per equal-width bin of top-1 confidence: its image count, mean confidence, accuracy."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    # Bin i holds confidences in (i/bins, (i+1)/bins]; a confidence of 0 goes to the first.
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    result = []
    for number in range(bins):
        members = index == number
        count = int(members.sum())
        result.append({"count": count,
                       "confidence": float(confidence[members].mean()) if count else None,
                       "accuracy": float(correct[members].mean()) if count else None})
    return result


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray,
                               bins: int = ECE_BINS) -> float:
    """Sum over bins of (share of images) x |accuracy - mean confidence|."""
    total = len(labels)
    return float(sum(entry["count"] / total * abs(entry["accuracy"] - entry["confidence"])
                     for entry in reliability_bins(probabilities, labels, bins)
                     if entry["count"]))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the NLL of `labels` under the rescaled probabilities."""
    from scipy.optimize import minimize_scalar

    # The NLL is smooth and unimodal in log T: a bounded scalar search finds its minimum.
    low, high = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    found = minimize_scalar(
        lambda log_t: negative_log_likelihood(scale(probabilities, np.exp(log_t)), labels),
        bounds=(low, high), method="bounded", options={"xatol": 1e-5})
    return round(float(np.exp(found.x)), 4)


def at_bound(temperature: float) -> bool:
    """Whether a fitted temperature sits at an end of the search range (the data did not
    decide it)."""
    return any(abs(temperature - end) / end < 1e-3 for end in TEMPERATURE_RANGE)


def calibration_report(before: np.ndarray, after: np.ndarray, labels: np.ndarray) -> dict:
    """ECE and NLL of `labels` under the probabilities before and after scaling."""
    return {"ece_before": round(expected_calibration_error(before, labels), 4),
            "ece_after": round(expected_calibration_error(after, labels), 4),
            "nll_before": round(negative_log_likelihood(before, labels), 4),
            "nll_after": round(negative_log_likelihood(after, labels), 4)}


def plot_reliability_diagram(before: np.ndarray, after: np.ndarray, labels: np.ndarray,
                             temperature: float, path: str) -> None:
    """Save accuracy against confidence per bin, before and after scaling, with the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4.5), sharey=True)
    width = 1 / ECE_BINS
    centres = (np.arange(ECE_BINS) + 0.5) * width
    for axis, probabilities, title in ((axes[0], before, "before"),
                                       (axes[1], after, f"after (T = {temperature:g})")):
        entries = reliability_bins(probabilities, labels)
        accuracy = [entry["accuracy"] or 0.0 for entry in entries]
        axis.bar(centres, accuracy, width=width * 0.95, color="tab:blue", label="accuracy")
        axis.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        ece = expected_calibration_error(probabilities, labels)
        axis.set_title(f"{title}: ECE {ece:.4f}, {len(labels)} test images")
        axis.set_xlabel("confidence (top-1 probability)")
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
        axis.legend(loc="upper left")
    axes[0].set_ylabel("accuracy in the bin")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
