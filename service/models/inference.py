"""One model version loaded for serving: its metadata and its model.tflite, run by LiteRT.

LiteRT (the standalone `ai-edge-litert` package) runs the model through XNNPACK
without TensorFlow: it imports in a fraction of a second, and a worker with its
model stays near 100 MiB.
"""

import datetime
import json
import os
import threading

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from service.models.artifact import METADATA_FILE, TFLITE_FILE, missing_files
from service.models.confidence import version_threshold
from service.process.cpus import on_service_cpus, usable_cores

EXPORT_HINT = "add it with: python -m model_training.export <version folder>"
# The accuracy figures of metadata.json's "metrics" that GET /model shows.
CLIENT_METRICS = ("test_accuracy", "test_accuracy_single_view", "test_accuracy_flip_averaged",
                  "test_images", "per_class_accuracy")
# The largest batch an interpreter runs in one invoke: a batcher's call of up to
# BATCH_MAX_SIZE images runs as invokes of at most this many. XNNPACK is as fast per image
# at 4 as at 8 or 32 on these CNNs (0.997 of 8's images/s, eight alternating rounds), and
# the arena of 4 holds an eighth of 32's (docs/performance.md).
INTERPRETER_MAX_BATCH = 4
# A lone one-image request may run on every core: the common case, for a second interpreter
# of about 2.4 MiB (its own packed weights and an arena for one image), not one for 8.
ALL_CORES_MAX_BATCH = 1


class ModelLoadError(Exception):
    """A version folder does not hold a usable model; the message names no path."""

    kind = "load_failed"


class ModelTooLargeError(ModelLoadError):
    """A version would not fit in what is left of the worker's share of the memory limit."""

    kind = "too_large"


class LiteRunner:
    """A converted model run by XNNPACK, for every batch size up to `max_batch_size`.

    One interpreter, its input resized to each call's batch: XNNPACK reshapes without
    packing the weights again (about 5 µs), so a batch runs at its own size, never padded.
    It is allocated and warmed at `max_batch_size` at once, so that what the version
    holds is known when it loads (its arena only grows) and no request pays for it.
    Interpreters are not thread-safe: calls take turns.
    """

    def __init__(self, model: bytes | str, max_batch_size: int = 1, threads: int = 0):
        """`model`: the .tflite's bytes, or its path (mapped from the page cache, not read)."""
        self.max_batch_size = max(1, max_batch_size)
        source = {"model_content": model} if isinstance(model, bytes) else {"model_path": model}
        self._interpreter = Interpreter(**source, num_threads=threads or usable_cores())
        details = self._interpreter.get_input_details()[0]
        self._input, self.input_dtype = details["index"], details["dtype"]
        self.input_shape = tuple(int(side) for side in details["shape"][1:])
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._lock = threading.Lock()
        self._batch_size = 0
        self._resize(self.max_batch_size)
        self.output_shape = tuple(self._run(np.zeros((self.max_batch_size,) + self.input_shape,
                                                     self.input_dtype)).shape[1:])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities for a uint8 batch of any size."""
        probabilities = np.empty((len(images),) + self.output_shape, np.float32)
        with self._lock:
            for start in range(0, len(images), self.max_batch_size):
                batch = images[start:start + self.max_batch_size]
                if len(batch) != self._batch_size:
                    self._resize(len(batch))
                probabilities[start:start + len(batch)] = self._run(batch)
        return probabilities

    def _resize(self, batch_size: int) -> None:
        self._interpreter.resize_tensor_input(self._input, (batch_size,) + self.input_shape,
                                              strict=True)
        self._interpreter.allocate_tensors()
        self._batch_size = batch_size

    def _run(self, images: np.ndarray) -> np.ndarray:
        self._interpreter.set_tensor(self._input, images)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output)


class ServingModel:
    """One loaded, warmed model version and the metadata that describes it."""

    # Resident memory its load added to the process (service/models/footprint.py).
    memory_bytes = 0

    def __init__(self, path: str | os.PathLike, warm_batch_size: int = 1, threads: int = 0,
                 all_core_threads: int = 0):
        missing = missing_files(path)
        if missing:
            raise ModelLoadError(f"it has no {' or '.join(missing)}"
                                 + (f"; {EXPORT_HINT}" if missing == [TFLITE_FILE] else ""))
        try:
            with open(os.path.join(path, METADATA_FILE), encoding="utf-8") as file:
                self.metadata = json.load(file)
            str(self.metadata["name"])  # required by the artifact; the folder's name is served
            folder = os.path.normpath(path)
            # Served under its folder's names: models/<name>/<version>.
            self.name = os.path.basename(os.path.dirname(folder))
            self.version = int(os.path.basename(folder))
            self.classes = [str(label) for label in self.metadata["classes"]]
            shape = self.metadata["input"]
            self.input_shape = (int(shape["height"]), int(shape["width"]), int(shape["channels"]))
            # Below it, an answer is "unknown" (service/models/confidence.py).
            self.min_confidence = version_threshold(self.metadata)
        except OSError as error:
            raise ModelLoadError(f"unreadable {METADATA_FILE}: {error.strerror}") from None
        # Whatever the file holds: int(1e999) overflows, and json recurses on deep nesting.
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as error:
            raise ModelLoadError(
                f"unreadable {METADATA_FILE}: {type(error).__name__}: {error}") from None
        try:
            # Mapped, not read: its pages are the page cache's, one copy for every worker,
            # and once XNNPACK has packed the weights they are not touched again, so the
            # kernel may drop them (docs/performance.md, "What one loaded version adds").
            tflite = os.path.join(path, TFLITE_FILE)
            with open(tflite, "rb") as file:  # an unreadable file fails here, path-free
                file.read(1)
            # Allocated and warmed now, so that no request pays for it and what the version
            # holds is known before it serves.
            cores = usable_cores()
            threads, all_core_threads = threads or cores, all_core_threads or cores
            self._run = LiteRunner(tflite, min(warm_batch_size, INTERPRETER_MAX_BATCH), threads)
            # For a call made while no other worker needs the cores
            # (service/process/worker_activity.py): its XNNPACK threads may run on theirs too
            # (service/process/cpus.py).
            if all_core_threads == threads:
                self._run_all_cores = self._run
            else:
                with on_service_cpus():
                    self._run_all_cores = LiteRunner(
                        tflite, min(warm_batch_size, ALL_CORES_MAX_BATCH), all_core_threads)
        except OSError as error:
            raise ModelLoadError(f"unreadable {TFLITE_FILE}: {error.strerror}") from None
        except (ValueError, RuntimeError) as error:
            raise ModelLoadError(f"unreadable {TFLITE_FILE}: {error}") from None
        self._check_shapes()
        self.loaded_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")

    def _check_shapes(self):
        """Refuse a model whose input or output contradicts the metadata."""
        runner = self._run
        if runner.input_dtype != np.uint8:
            raise ModelLoadError(f"{TFLITE_FILE} takes {np.dtype(runner.input_dtype).name} input, "
                                 f"not uint8 pixels; {EXPORT_HINT}")
        if runner.input_shape != self.input_shape or runner.output_shape != (len(self.classes),):
            raise ModelLoadError(
                f"model takes {runner.input_shape} and gives {runner.output_shape[-1]} scores, "
                f"but the metadata says {self.input_shape} and {len(self.classes)} classes")

    def infer(self, images: np.ndarray, all_cores: bool = False) -> np.ndarray:
        """Class probabilities for a uint8 batch of shape (count, height, width, channels).

        `all_cores`: nothing else in the service needs the cores now, so use all of them.
        """
        if all_cores and len(images) <= self._run_all_cores.max_batch_size:
            return self._run_all_cores(images)
        return self._run(images)

    def rank(self, scores: np.ndarray, top_k: int) -> list[dict]:
        """The `top_k` labels with the highest of one image's `scores`, best first."""
        best = np.argsort(scores)[::-1][:top_k]
        return [{"label": self.classes[i], "confidence": round(float(scores[i]), 4)}
                for i in best]

    def describe(self) -> dict:
        """What a client needs of metadata.json, and when this process loaded it.

        The training command and the paths of the machine it ran on stay in the file.
        """
        metrics = self.metadata.get("metrics")
        height, width, channels = self.input_shape
        return {"name": self.name, "version": self.version, "classes": self.classes,
                "input": {"height": height, "width": width, "channels": channels},
                "metrics": ({key: value for key, value in metrics.items()
                             if key in CLIENT_METRICS} if isinstance(metrics, dict) else {}),
                "min_confidence": self.min_confidence,
                "calibration": _calibration(self.metadata),
                "created_at": self.metadata.get("created_at"),
                "framework": self.metadata.get("framework"), "loaded_at": self.loaded_at}


def _calibration(metadata: dict) -> dict | None:
    """metadata.json's temperature and test ECE and NLL, before and after, for clients."""
    found = metadata.get("calibration")
    if not isinstance(found, dict):
        return None
    return {"temperature": found.get("temperature"), "bins": found.get("bins"),
            "test": found.get("test")}
