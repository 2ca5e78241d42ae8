"""The model store: load the newest complete model version, warm it, and swap in newer ones."""

import datetime
import json
import logging
import os
import threading
import time

import numpy as np

from service.inference import make_runner

log = logging.getLogger("service.model_store")

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"


class ModelLoadError(Exception):
    """A version folder does not hold a usable model."""


def configure_tensorflow(intra_op_threads, inter_op_threads):
    """Set TensorFlow's thread pools; this must happen before its first operation."""
    import tensorflow as tf

    try:
        if intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
        if inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
    except RuntimeError:
        log.warning("TensorFlow was already initialised; thread settings left as they were")


class ServingModel:
    """One loaded, warmed model version and the metadata that describes it."""

    def __init__(self, path, warm_batch_size=1):
        import keras

        self.path = path
        try:
            with open(os.path.join(path, METADATA_FILE), encoding="utf-8") as file:
                self.metadata = json.load(file)
            self.name = str(self.metadata["name"])
            self.version = int(os.path.basename(os.path.normpath(path)))
            self.classes = [str(label) for label in self.metadata["classes"]]
            shape = self.metadata["input"]
            self.input_shape = (int(shape["height"]), int(shape["width"]), int(shape["channels"]))
        # Whatever the file holds: int(1e999) overflows, and json recurses on deep nesting.
        except (OSError, ValueError, KeyError, TypeError, OverflowError, RecursionError) as error:
            raise ModelLoadError(f"unreadable {METADATA_FILE}: {error!r}") from None
        try:
            self.model = keras.saving.load_model(os.path.join(path, MODEL_FILE), compile=False)
        except Exception as error:
            raise ModelLoadError(
                f"unreadable {MODEL_FILE}: {type(error).__name__}: {error}") from None
        model_input = tuple(self.model.input_shape[1:])
        model_output = self.model.output_shape[-1]
        if model_input != self.input_shape or model_output != len(self.classes):
            raise ModelLoadError(
                f"model takes {model_input} and gives {model_output} scores, but the metadata "
                f"says {self.input_shape} and {len(self.classes)} classes")

        # Compiled once for every batch size up to the batcher's largest, and warmed, so that
        # no request pays for tracing or for model.predict's per-call overhead.
        self._run = make_runner(self.model, self.input_shape, warm_batch_size)
        self.loaded_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")

    def infer(self, images):
        """Class probabilities for a uint8 batch of shape (count, height, width, channels)."""
        return self._run(images)

    def rank(self, scores, top_k):
        """The `top_k` labels with the highest of one image's `scores`, best first."""
        best = np.argsort(scores)[::-1][:top_k]
        return [{"label": self.classes[i], "confidence": round(float(scores[i]), 4)}
                for i in best]

    def describe(self):
        """The metadata, plus where and when this process loaded it."""
        return {**self.metadata, "version": self.version, "loaded_at": self.loaded_at}


def complete_versions(versions_dir):
    """Return the published version numbers under `versions_dir`, newest first."""
    try:
        entries = list(os.scandir(versions_dir))
    except OSError:
        return []
    versions = [int(entry.name) for entry in entries
                if entry.name.isdigit() and int(entry.name) > 0 and entry.is_dir()
                and os.path.isfile(os.path.join(entry.path, MODEL_FILE))
                and os.path.isfile(os.path.join(entry.path, METADATA_FILE))]
    return sorted(versions, reverse=True)


class ModelStore:
    """Holds the serving version; a background thread keeps it the newest loadable one."""

    def __init__(self, versions_dir, poll_seconds=5.0, warm_batch_size=1, on_load=None):
        self.versions_dir = versions_dir
        self.poll_seconds = poll_seconds
        self.warm_batch_size = warm_batch_size
        self.on_load = on_load
        self.current = None
        self.state, self.reason = "loading", "the model is loading"
        self._failed = {}
        self._settled = threading.Event()
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        """Load in the background so the process answers liveness checks at once."""
        self._thread = threading.Thread(target=self._run, name="model-store", daemon=True)
        self._thread.start()
        return self

    def wait_for_model(self, timeout):
        """The serving model; while the first load is under way, wait up to `timeout` for it."""
        if self.current is None and self.state == "loading":
            self._settled.wait(timeout)
        return self.current

    def stop(self):
        """Stop polling (the serving model stays usable)."""
        self._stop.set()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:
                log.exception("model poll failed")
            finally:
                # The first look has ended, with or without a model: nobody should wait longer.
                self._settled.set()
            self._stop.wait(self.poll_seconds)

    def refresh(self):
        """Serve the highest complete version that loads; return True when it changed."""
        current_version = self.current.version if self.current else None
        for version in complete_versions(self.versions_dir):
            if version == current_version:
                return False
            path = os.path.join(self.versions_dir, str(version))
            stamp = os.stat(path).st_mtime_ns
            if self._failed.get(version) == stamp:
                continue
            started = time.monotonic()
            try:
                loaded = ServingModel(path, self.warm_batch_size)
            except ModelLoadError as error:
                self._failed[version] = stamp
                log.error("model version %s failed to load and is skipped: %s", version, error,
                          extra={"event": "model_load_failed", "model_version": version})
                continue
            seconds = time.monotonic() - started
            previous, self.current = self.current, loaded
            self.state, self.reason = "ready", ""
            log.info("serving model %s version %s (loaded in %.2f s, was %s)", loaded.name,
                     version, seconds, previous.version if previous else "none",
                     extra={"event": "model_swap", "model_version": version,
                            "load_seconds": round(seconds, 3)})
            if self.on_load:
                self.on_load(loaded, seconds)
            return True
        if self.current is None:
            failed = bool(self._failed)
            self.state = "load_failed" if failed else "no_model"
            name = os.path.basename(self.versions_dir)
            self.reason = (f"no version under {name!r} could be loaded"
                           if failed else "no model version has been published yet")
        return False
