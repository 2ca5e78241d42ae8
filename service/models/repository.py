"""The model repository: every model under MODEL_DIR, the versions its policy keeps loaded,
and the routing table that requests read.

A background thread looks at the folders every MODEL_POLL_SECONDS. For each model it
rereads serving.json when the file has changed, loads the versions the policy wants,
and swaps in a new routing table in one assignment, so a request sees the old table or
the new one, never half of each. A version leaves memory once no table names it;
requests already holding it finish on it.

What never happens, whatever is on disk:
- A policy file that cannot be used (not JSON, an unknown key, a percentage out of range,
  a label on a version that does not exist or does not load) never goes into force: the
  last good policy stays, and the reason is logged, counted and shown in /models.
- A change that would leave a serving model with nothing to serve is not made: a version
  folder deleted while it serves keeps serving from memory, with the reason shown.
- A model whose policy file is unusable at start serves nothing rather than guess: the
  newest version might be the very one the policy keeps out.
"""

import enum
import logging
import os
import threading
import time
from collections.abc import Callable

from service.models.artifact import POLICY_FILE, model_names, published_versions
from service.models.inference import ModelLoadError, ServingModel
from service.models.policy import (
    ALL,
    CANARY,
    LATEST,
    STABLE,
    PolicyError,
    ServingPolicy,
    parse_policy,
)
from service.models.routing import Route, RoutingError, RoutingTable, Splitter

log = logging.getLogger("service.models")

# A policy is a few hundred bytes; a larger file is refused unread.
MAX_POLICY_BYTES = 64 * 1024


class ModelState(enum.StrEnum):
    """Where a model stands; the values are what /health/ready reports as its status."""

    LOADING = "loading"
    READY = "ready"
    NO_MODEL = "no_model"
    LOAD_FAILED = "load_failed"
    POLICY_INVALID = "policy_invalid"


class Model:
    """One model folder: its policy, its loaded versions, and the table requests are routed by."""

    def __init__(self, name: str, folder: str, load: Callable[[str], ServingModel],
                 on_load: Callable | None = None, on_change: Callable | None = None):
        self.name = name
        self.folder = folder
        self._load = load
        self._on_load = on_load
        self._on_change = on_change
        self.table = RoutingTable(name, {}, {})
        self.state, self.reason = ModelState.LOADING, "the model is loading"
        # The policy in force (None until one could be used) and where it came from.
        self.policy: ServingPolicy | None = None
        self.policy_source = "default"
        # Why serving.json is not in force, or "" while it is (or there is none).
        self.policy_problem = ""
        # Versions on disk that do not serve, and why.
        self.version_problems: dict[int, str] = {}
        self.on_disk: list[int] = []
        # version -> (folder mtime, reason, kind): a failed version is tried again only once
        # it changes.
        self._failed: dict[int, tuple[int, str]] = {}
        # serving.json as last read: its (mtime, size, inode), and the policy or the error.
        self._file_stamp = None
        self._file_result: ServingPolicy | PolicyError | None = None
        self._logged_problem = ""
        # (what was on disk, the problem) of the last policy refused for what it names.
        self._refused = None
        self.settled = threading.Event()

    # Requests call these.

    def route(self, splitter: Splitter, version: str | None = None, label: str | None = None,
              routing_key: str | None = None) -> Route:
        """The version that answers a request for this model (RoutingError when none can)."""
        table = self.table
        if table.stable is None:  # then no version is loaded at all
            raise self._not_ready()
        return table.route(splitter, version, label, routing_key)

    def stable(self) -> ServingModel:
        """The stable version (RoutingError while there is none)."""
        stable = self.table.stable
        if stable is None:
            raise self._not_ready()
        return stable

    def _not_ready(self) -> RoutingError:
        return RoutingError("model_not_ready", f"No version of model {self.name!r} is ready: "
                                               f"{self.reason}. Retry shortly.")

    def describe(self) -> dict:
        """The model as /models shows it: versions, labels, canary, policy, state and reasons."""
        table, policy = self.table, self.policy
        versions = []
        for version in sorted(set(self.on_disk) | set(table.versions)):
            entry = {"version": version, "state": "ready" if version in table.versions
                     else "unavailable", "labels": table.labels_of(version)}
            if version in table.versions:
                entry["loaded_at"] = table.versions[version].loaded_at
                entry["memory_bytes"] = table.versions[version].memory_bytes
            reason = self.version_problems.get(version) or self._not_loaded_reason(version)
            if reason:
                entry["reason"] = reason
            versions.append(entry)
        canary = table.labels.get("canary")
        stable = table.stable
        return {
            "name": self.name, "state": str(self.state), "reason": self.reason,
            "versions": versions, "labels": dict(sorted(table.labels.items())),
            "canary": None if canary is None else {"version": canary, **vars(table.canary)},
            "policy": {"source": self.policy_source, "problem": self.policy_problem,
                       **(policy.as_json() if policy else {})},
            "classes": stable.classes if stable else None,
            "input": dict(zip(("height", "width", "channels"), stable.input_shape,
                              strict=True)) if stable else None,
        }

    def refused(self) -> dict[str, int]:
        """How many versions on disk failed to load, by kind (load_failed, too_large)."""
        counts = {"load_failed": 0, "too_large": 0}
        for version, (_, _, kind) in self._failed.items():
            if version in self.on_disk:
                counts[kind] = counts.get(kind, 0) + 1
        return counts

    def _not_loaded_reason(self, version: int) -> str:
        if version in self.table.versions or self.policy is None:
            return ""
        kept = self.policy.versions
        if kept.kind == LATEST:
            return f"not loaded: the policy keeps the latest {kept.num_versions} and the labelled"
        return "not loaded: the policy does not name it"

    # The poller calls these.

    def refresh(self) -> bool:
        """Reread the policy and the folders; return True when the routing table changed."""
        try:
            self.on_disk = published_versions(self.folder)
            newest_first = self.on_disk[::-1]
            candidate, source = self._read_policy()
            problem = ""
            # A policy refused for what is on disk is not tried again (nor are the versions
            # it named loaded again) until the file or a version folder changes.
            disk = (self._file_stamp, self._disk_state())
            if isinstance(candidate, PolicyError):
                problem = f"{POLICY_FILE} cannot be used: {candidate}"
            elif self._refused and self._refused[0] == disk:
                problem = self._refused[1]
            else:
                table, version_problems, refusal = self._build(candidate, newest_first)
                if refusal:
                    problem = f"{POLICY_FILE} is not in force: {refusal}"
                    self._refused = (disk, problem)
                else:
                    self.policy, self.policy_source = candidate, source
                    self._refused = None
            if problem:
                # The last good policy stays; at start there is none, and nothing serves.
                table, version_problems, _ = (self._build(self.policy, newest_first) if self.policy
                                              else (RoutingTable(self.name, {}, {}), {}, ""))
            if self.table.stable is not None and table.stable is None:
                # Nothing to serve now: keep serving what serves.
                table, version_problems = self.table, {
                    **version_problems, **{version: "deleted from disk or no longer loadable; "
                                           "it serves from memory until another version can"
                                           for version in self.table.versions}}
            self.version_problems = version_problems
            self._note_policy_problem(problem)
            return self._swap(table, newest_first, problem)
        finally:
            self.settled.set()

    def _disk_state(self) -> tuple:
        """Each version folder with its modification time: a change to any shows here."""
        state = []
        for version in self.on_disk:
            try:
                stamp = os.stat(os.path.join(self.folder, str(version))).st_mtime_ns
            except OSError:
                continue
            state.append((version, stamp))
        return tuple(state)

    def _read_policy(self) -> tuple[ServingPolicy | PolicyError, str]:
        """The policy serving.json holds (or the default without one), and its source."""
        path = os.path.join(self.folder, POLICY_FILE)
        try:
            status = os.stat(path)
        except FileNotFoundError:
            self._file_stamp = None
            return ServingPolicy(), "default"
        except OSError as error:
            return PolicyError(f"cannot read it ({error.strerror})"), "file"
        stamp = (status.st_mtime_ns, status.st_size, status.st_ino)
        if stamp != self._file_stamp:
            self._file_stamp, self._file_result = stamp, _parse_file(path, status.st_size)
        return self._file_result, "file"

    def _build(self, policy: ServingPolicy, newest_first: list[int]):
        """(table, version problems, refusal) for `policy` over the versions on disk."""
        current = self.table.versions
        loaded, problems = {}, {}

        def get(version):
            if version in loaded:
                return loaded[version]
            if version in current:
                return current[version]
            if version not in self.on_disk:
                return None
            return self._load_version(version)

        # Labels first: a label that cannot be honoured refuses the policy before any
        # other version is loaded for it.
        labels = {}
        for label, version in sorted(policy.labels.items()):
            model = get(version)
            if model is None and label == STABLE and self._too_large(version):
                version, model = self._earlier_stable(policy, version, get, problems)
            if model is None:
                refusal = (f"the label {label!r} points at version {version}, which "
                           f"{self._why_not(version)}")
                return RoutingTable(self.name, {}, {}), problems, refusal
            loaded[version] = model
            labels[label] = version
            if version not in self.on_disk:
                problems[version] = ("deleted from disk; it serves from memory while the "
                                     "policy names it")
        kept = policy.versions
        wanted = (newest_first if kept.kind in (LATEST, ALL)
                  else sorted(kept.versions, reverse=True))
        selected = []
        for version in wanted:
            if kept.kind == LATEST and len(selected) == kept.num_versions:
                break
            model = get(version)
            if model is not None:
                loaded[version] = model
                selected.append(version)
            else:
                problems.setdefault(version, self._why_not(version))
        if STABLE not in labels:
            # Without a stable label: the newest version the policy keeps that is not the
            # canary, else the newest other version that loads.
            others = [version for version in selected if version != labels.get(CANARY)]
            if not others and CANARY in labels:
                for version in newest_first:
                    model = get(version) if version != labels[CANARY] else None
                    if model is not None:
                        loaded[version] = model
                        others = [version]
                        break
            if others:
                labels[STABLE] = max(others)
            elif CANARY in labels:
                return (RoutingTable(self.name, {}, {}), problems,
                        "the canary is the only version that loads; label a stable version")
        return RoutingTable(self.name, loaded, labels, policy.canary), problems, ""

    def _earlier_stable(self, policy: ServingPolicy, version: int, get, problems: dict):
        """For a stable that does not fit, which would leave a restarted worker nothing to
        serve: the newest earlier stable in the history that loads, else (version, None)."""
        for entry in reversed(policy.history):
            model = get(entry["stable"])
            if model is not None:
                problems[version] = (f"{self._why_not(version)}; stable is version "
                                     f"{entry['stable']}, the one before it, until it fits")
                return entry["stable"], model
        return version, None

    def _too_large(self, version: int) -> bool:
        """Whether `version` was refused for not fitting the memory limit."""
        return self._failed.get(version, (None, "", ""))[2] == "too_large"

    def _why_not(self, version: int) -> str:
        """Why `version` cannot serve, in words for a person."""
        if version in self._failed:
            return f"failed to load: {self._failed[version][1]}"
        return "does not exist"

    def _load_version(self, version: int) -> ServingModel | None:
        """The loaded version, or None when it failed, now or unchanged since it last failed."""
        path = os.path.join(self.folder, str(version))
        try:
            stamp = os.stat(path).st_mtime_ns
        except OSError:
            return None
        if self._failed.get(version, (None,))[0] == stamp:
            return None
        started = time.monotonic()
        try:
            model = self._load(path)
        except ModelLoadError as error:
            self._failed[version] = (stamp, str(error), error.kind)
            log.error("model %s version %s failed to load and is skipped: %s", self.name, version,
                      error, extra={"event": "model_load_failed", "model": self.name,
                                    "model_version": version, "reason": str(error)})
            return None
        self._failed.pop(version, None)
        seconds = time.monotonic() - started
        log.info("model %s version %s loaded in %.2f s", self.name, version, seconds,
                 extra={"event": "model_load", "model": self.name, "model_version": version,
                        "load_seconds": round(seconds, 3)})
        if self._on_load:
            self._on_load(self.name, model, seconds)
        return model

    def _note_policy_problem(self, problem: str) -> None:
        """Log a new problem with the policy file once; clear it once the file is in force."""
        self.policy_problem = problem
        if problem and problem != self._logged_problem:
            log.error("model %s: %s; the last good policy stays in force", self.name, problem,
                      extra={"event": "policy_rejected", "model": self.name, "reason": problem})
        elif not problem and self._logged_problem:
            log.info("model %s: %s is in force again", self.name, POLICY_FILE,
                     extra={"event": "policy_accepted", "model": self.name})
        self._logged_problem = problem

    def _swap(self, table: RoutingTable, newest_first: list[int], problem: str) -> bool:
        """Make `table` the one requests read; set the state; say whether anything changed."""
        old = self.table
        if table.stable is not None:
            self.state, self.reason = ModelState.READY, ""
        elif problem and self.policy is None:
            self.state, self.reason = ModelState.POLICY_INVALID, problem
        elif any(version in self._failed for version in newest_first):
            newest = next(version for version in newest_first if version in self._failed)
            self.state = ModelState.LOAD_FAILED
            self.reason = (f"no version of {self.name!r} could be loaded; version {newest} was "
                           f"skipped: {self._failed[newest][1]}")
        else:
            self.state, self.reason = ModelState.NO_MODEL, "no model version has been published yet"
        changed = (table.versions.keys() != old.versions.keys() or table.labels != old.labels
                   or table.canary != old.canary
                   or any(table.versions[v] is not old.versions[v] for v in table.versions))
        if changed:
            self.table = table
            was = old.labels.get(STABLE)
            if table.labels.get(STABLE) != was:
                log.info("serving model %s version %s (was %s)", self.name,
                         table.labels.get(STABLE), was or "none",
                         extra={"event": "model_swap", "model": self.name,
                                "model_version": table.labels.get(STABLE)})
            log.info("model %s: loaded versions %s, labels %s, canary %s%% %s", self.name,
                     sorted(table.versions), dict(sorted(table.labels.items())),
                     table.canary.percent, table.canary.mode,
                     extra={"event": "model_routing", "model": self.name,
                            "versions": sorted(table.versions), "labels": table.labels,
                            "canary_percent": table.canary.percent,
                            "canary_mode": table.canary.mode})
        if self._on_change:
            self._on_change(self)
        return changed


def _parse_file(path: str, size: int) -> ServingPolicy | PolicyError:
    """The policy in the file at `path`, or the PolicyError that says why it cannot be used."""
    if size > MAX_POLICY_BYTES:
        return PolicyError(f"it is {size} bytes; a policy is at most {MAX_POLICY_BYTES}")
    try:
        with open(path, "rb") as file:
            return parse_policy(file.read(MAX_POLICY_BYTES + 1))
    except PolicyError as error:
        return error
    except OSError as error:
        return PolicyError(f"cannot read it ({error.strerror})")


class ModelRepository:
    """Every model under `model_dir`; a background thread keeps each one's table current."""

    def __init__(self, model_dir: str, default_name: str, poll_seconds: float = 5.0,
                 load: Callable[[str], ServingModel] = ServingModel,
                 on_load: Callable | None = None, on_change: Callable | None = None):
        self.model_dir = model_dir
        self.default_name = default_name
        self.poll_seconds = poll_seconds
        self._load, self._on_load, self._on_change = load, on_load, on_change
        self.models: dict[str, Model] = {}
        self.splitter = Splitter()
        self._scanned = threading.Event()

    def start(self) -> "ModelRepository":
        """Load in the background so the process answers liveness checks at once."""
        threading.Thread(target=self._run, name="model-repository", daemon=True).start()
        return self

    def _run(self):
        while True:
            try:
                self.refresh()
            except Exception:
                log.exception("model poll failed")
            finally:
                self._scanned.set()
            time.sleep(self.poll_seconds)

    def refresh(self) -> bool:
        """Look at every model folder once; return True when any routing table changed."""
        try:
            names = model_names(self.model_dir)
        except OSError:
            names = None  # the folder is missing or unreadable: change nothing that serves
        if names is not None:
            models = {name: self.models.get(name) or Model(
                name, os.path.join(self.model_dir, name), self._load, self._on_load,
                self._on_change) for name in names}
            self.models = models
        self._scanned.set()
        # The default model first: readiness waits for it alone.
        order = sorted(self.models.values(), key=lambda model: model.name != self.default_name)
        changed = False
        for model in order:
            try:
                changed = model.refresh() or changed
            except Exception:
                log.exception("model %s: poll failed", model.name)
        return changed

    @property
    def default(self) -> Model | None:
        """The model that routes naming none serve (MODEL_NAME), once its folder exists."""
        return self.models.get(self.default_name)

    def model(self, name: str, wait_seconds: float = 0) -> Model:
        """The model called `name`; its first load may take up to `wait_seconds` to finish."""
        self._scanned.wait(wait_seconds)
        model = self.models.get(name)
        if model is None:
            if name == self.default_name or not self._scanned.is_set():
                # The default model is expected: until it is published, it is not ready.
                raise RoutingError("model_not_ready",
                                   f"No model is ready: {self.readiness()[1]}. Retry shortly.")
            served = ", ".join(repr(known) for known in sorted(self.models)) or "none"
            raise RoutingError("model_not_found",
                               f"Unknown model {name[:100]!r}: this server serves {served}.")
        model.settled.wait(wait_seconds)
        return model

    def readiness(self) -> tuple[str, str]:
        """(state, reason) of the default model, which /health/ready reports."""
        model = self.default
        if model is not None:
            return str(model.state), model.reason
        if not self._scanned.is_set():
            return str(ModelState.LOADING), "the model is loading"
        return (str(ModelState.NO_MODEL),
                f"no model version of {self.default_name!r} has been published yet")
