"""The model store: serve the newest loadable model version; swap in newer ones as they appear."""

import enum
import logging
import os
import threading
import time

from service.artifact import published_versions
from service.inference import ModelLoadError, ServingModel

log = logging.getLogger("service.model_store")


class ModelState(enum.StrEnum):
    """Where the store stands; the values are what /health/ready reports as its status."""

    LOADING = "loading"
    READY = "ready"
    NO_MODEL = "no_model"
    LOAD_FAILED = "load_failed"


class ModelStore:
    """Holds the serving version; a background thread keeps it the newest loadable one."""

    def __init__(self, versions_dir, poll_seconds=5.0, warm_batch_size=1, on_load=None,
                 threads=0, all_core_threads=0):
        self.versions_dir = versions_dir
        self.poll_seconds = poll_seconds
        self.warm_batch_size = warm_batch_size
        # Threads for one model call; 0 means every core.
        self.threads = threads
        # Threads for a call made while no other worker is busy.
        self.all_core_threads = all_core_threads
        self.on_load = on_load
        self.current = None
        self.state, self.reason = ModelState.LOADING, "the model is loading"
        # version -> (folder mtime, reason): a failed version is tried again only once it changes.
        self._failed = {}
        self._settled = threading.Event()

    def start(self) -> "ModelStore":
        """Load in the background so the process answers liveness checks at once."""
        threading.Thread(target=self._run, name="model-store", daemon=True).start()
        return self

    def wait_for_model(self, timeout: float) -> ServingModel | None:
        """The serving model; while the first load is under way, wait up to `timeout` for it."""
        if self.current is None and self.state == ModelState.LOADING:
            self._settled.wait(timeout)
        return self.current

    def _run(self):
        while True:
            try:
                self.refresh()
            except Exception:
                log.exception("model poll failed")
            finally:
                # The first look has ended, with or without a model: nobody should wait longer.
                self._settled.set()
            time.sleep(self.poll_seconds)

    def refresh(self) -> bool:
        """Serve the highest version that loads; return True when it changed."""
        current_version = self.current.version if self.current else None
        versions = published_versions(self.versions_dir)
        for version in reversed(versions):
            if version == current_version:
                return False
            loaded, seconds = self._load(version)
            if loaded is None:
                continue
            previous, self.current = self.current, loaded
            self.state, self.reason = ModelState.READY, ""
            log.info("serving model %s version %s (loaded in %.2f s, was %s)", loaded.name,
                     version, seconds, previous.version if previous else "none",
                     extra={"event": "model_swap", "model_version": version,
                            "load_seconds": round(seconds, 3)})
            if self.on_load:
                self.on_load(loaded, seconds)
            return True
        if self.current is None:
            self._explain_no_model(versions)
        return False

    def _load(self, version):
        """(model, seconds) for `version`, or (None, 0) when it failed, now or unchanged since."""
        path = os.path.join(self.versions_dir, str(version))
        try:
            stamp = os.stat(path).st_mtime_ns
        except OSError:
            return None, 0
        if self._failed.get(version, (None,))[0] == stamp:
            return None, 0
        started = time.monotonic()
        try:
            loaded = ServingModel(path, self.warm_batch_size, self.threads,
                                  self.all_core_threads)
        except ModelLoadError as error:
            self._failed[version] = (stamp, str(error))
            log.error("model version %s failed to load and is skipped: %s", version, error,
                      extra={"event": "model_load_failed", "model_version": version,
                             "reason": str(error)})
            return None, 0
        self._failed.pop(version, None)
        return loaded, time.monotonic() - started

    def _explain_no_model(self, versions):
        """Set the state and reason /health/ready gives while none of `versions` serves."""
        failed = [version for version in versions if version in self._failed]
        if failed:
            newest = failed[-1]
            self.state = ModelState.LOAD_FAILED
            self.reason = (f"no version of {os.path.basename(self.versions_dir)!r} could be "
                           f"loaded; version {newest} was skipped: {self._failed[newest][1]}")
        else:
            self.state = ModelState.NO_MODEL
            self.reason = "no model version has been published yet"
