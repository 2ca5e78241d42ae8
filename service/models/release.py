"""Release a model's versions by rewriting its serving.json: show, canary, promote, roll back.

    python -m service.models.release status cifar10
    python -m service.models.release canary cifar10 3 --percent 10 [--mode shadow]
    python -m service.models.release canary cifar10 --off
    python -m service.models.release promote cifar10 [3]     # default: the canary
    python -m service.models.release promote cifar10 --require-evidence
    python -m service.models.release rollback cifar10

It needs no TensorFlow, so it runs in the api image, the trainer image and a Kubernetes
Job alike. Each change takes the model's lock file, so two commands at once apply one
after the other; the file is written whole under a temporary name and renamed into
place, so a poller never reads half of it. A version must be complete on disk before a
label may point at it. Every worker and replica picks the change up at its next poll
(MODEL_POLL_SECONDS). Bad input ends with one line on stderr and exit status 2.

With the prediction store (--store, default $PREDICTION_STORE), `status` shows each
version's live accuracy from feedback, stable and the canary side by side, and
`promote --require-evidence` promotes only when the feedback shows the candidate no worse
than stable by more than the margin (service/store/accuracy.py); else exit status 3 and why.
"""

import argparse
import contextlib
import fcntl
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace

from service.config import Settings
from service.models.artifact import (
    POLICY_FILE,
    POLICY_LOCK_FILE,
    complete_versions,
    missing_files,
    published_versions,
    replace_file,
)
from service.models.inference import ModelLoadError, ServingModel
from service.models.policy import SHADOW, SPLIT, STABLE, PolicyError, ServingPolicy
from service.models.policy import parse_policy as parse
from service.store.accuracy import (
    LiveAccuracy,
    describe_comparison,
    evidence,
    live_accuracy,
    per_version,
)
from service.store.database import Database, StoreSchemaError, StoreUnavailableError

USAGE_ERROR = 2
NO_FEEDBACK = LiveAccuracy(0, 0)
NOT_ENOUGH_EVIDENCE = 3
# The release gate's margin on held-out images (model_training/gate.py), used for live
# accuracy too: a version may lose up to one point to noise.
EVIDENCE_MARGIN = 0.01


class ReleaseError(Exception):
    """A release step that cannot be made; the message says why and what to do."""


class EvidenceError(Exception):
    """The live accuracy does not (yet) show that a candidate may be promoted."""


def read_policy(folder: str) -> ServingPolicy | None:
    """The policy in `folder`/serving.json, None without one; ReleaseError if it is unusable."""
    try:
        with open(os.path.join(folder, POLICY_FILE), "rb") as file:
            return parse(file.read())
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ReleaseError(f"cannot read {POLICY_FILE} of {folder}: {error.strerror}") from None
    except PolicyError as error:
        raise ReleaseError(f"{POLICY_FILE} of {folder} cannot be used ({error}); fix it by hand "
                           "or remove it") from None


def stable_version(folder: str, policy: ServingPolicy | None) -> int | None:
    """The version that answers unpinned requests: the stable label's, else (the service's
    rule without one) the newest version that loads."""
    if policy is not None and policy.stable is not None:
        return policy.stable
    for version in complete_versions(folder):
        try:
            ServingModel(os.path.join(folder, str(version)), threads=1, all_core_threads=1)
        except ModelLoadError:
            continue
        return version
    return None


@contextlib.contextmanager
def model_lock(folder: str) -> Iterator[None]:
    """Hold the model's lock file: release steps on one model run one at a time."""
    if not os.path.isdir(folder):
        raise ReleaseError(f"there is no model folder {folder}")
    try:
        handle = open(os.path.join(folder, POLICY_LOCK_FILE), "a")
    except OSError as error:
        raise ReleaseError(f"cannot write to {folder}: {error.strerror}") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def change_policy(folder: str,
                  change: Callable[[ServingPolicy, int | None], ServingPolicy]) -> ServingPolicy:
    """Apply `change(policy, stable now)` to the model in `folder` under its lock; write it."""
    with model_lock(folder):
        current = read_policy(folder) or ServingPolicy()
        stable = stable_version(folder, current)
        if current.stable is None and stable is not None:
            # Written down, so that a version published later does not take over unasked.
            current = replace(current, labels={**current.labels, STABLE: stable})
        try:
            policy = change(current, stable)
        except PolicyError as error:
            raise ReleaseError(str(error)) from None
        check_complete(folder, policy)
        try:
            replace_file(folder, POLICY_FILE, policy.encode())
        except OSError as error:
            raise ReleaseError(f"cannot write {POLICY_FILE} in {folder}: "
                               f"{error.strerror}") from None
    return policy


def check_complete(folder: str, policy: ServingPolicy) -> None:
    """Refuse a policy that labels a version which is not complete on disk."""
    complete = complete_versions(folder)
    for label, version in sorted(policy.labels.items()):
        if version not in complete:
            missing = missing_files(os.path.join(folder, str(version)))
            what = (f"is incomplete (it has no {' or '.join(missing)})"
                    if version in published_versions(folder) else "does not exist")
            raise ReleaseError(f"version {version} of {os.path.basename(folder)} {what}, so "
                               f"it cannot be {label}; complete versions: "
                               f"{', '.join(map(str, sorted(complete))) or 'none'}")


def set_canary(folder: str, version: int, percent: float, mode: str) -> ServingPolicy:
    """Make `version` the canary with `percent` of unpinned requests, split or shadow."""
    def change(policy, stable):
        if version == stable:
            raise PolicyError(f"version {version} is already stable")
        return policy.with_canary(version, percent, mode)
    return change_policy(folder, change)


def end_canary(folder: str) -> ServingPolicy:
    """Remove the canary: stable answers every unpinned request."""
    return change_policy(folder, lambda policy, stable: policy.without_canary())


def promote(folder: str, version: int | None = None, by: str = "promote") -> ServingPolicy:
    """Make `version` (default: the canary) stable; the replaced stable goes on the history."""
    def change(policy, stable):
        chosen = policy.canary_version if version is None else version
        if chosen is None:
            raise PolicyError("there is no canary to promote; name a version")
        return policy.promoted(chosen, stable, by)
    return change_policy(folder, change)


def roll_back(folder: str) -> ServingPolicy:
    """Make the previous stable version from the history stable again."""
    return change_policy(folder, lambda policy, stable: policy.rolled_back())


def live_accuracy_lines(store: str, folder: str) -> list[str]:
    """`status`'s lines on live accuracy: stable and the canary, side by side."""
    policy = read_policy(folder)
    stable = stable_version(folder, policy)
    canary = policy.canary_version if policy is not None else None
    name = os.path.basename(folder)
    try:
        found = per_version(live_accuracy(Database(store), name), name)
    except (StoreUnavailableError, StoreSchemaError) as error:
        return [f"live accuracy: the prediction store cannot be read ({error})"]
    lines = [f"live accuracy (feedback in the prediction store; stable {stable}, canary "
             f"{canary if canary is not None else 'none'}):"]
    lines += describe_comparison(found.get(stable, NO_FEEDBACK), found.get(canary, NO_FEEDBACK))
    others = sorted(set(found) - {stable, canary})
    lines += [f"  version {version}: {found[version].correct}/{found[version].labelled} right"
              for version in others]
    return lines


def check_evidence(store: str, folder: str, version: int | None, min_feedback: int,
                   margin: float) -> str:
    """The reason the feedback allows promoting `version` (default: the canary) over stable;
    EvidenceError with the reason when it does not."""
    policy = read_policy(folder)
    stable = stable_version(folder, policy)
    chosen = version if version is not None else (policy.canary_version if policy else None)
    if chosen is None:
        raise ReleaseError("there is no canary to promote; name a version")
    name = os.path.basename(folder)
    try:
        found = per_version(live_accuracy(Database(store), name), name)
    except (StoreUnavailableError, StoreSchemaError) as error:
        raise EvidenceError(f"the prediction store cannot be read: {error}") from None
    passed, reason = evidence(found.get(stable, NO_FEEDBACK), found.get(chosen, NO_FEEDBACK),
                              min_feedback, margin)
    if not passed:
        raise EvidenceError(f"version {chosen} is not promoted over {stable}: {reason}")
    return reason


def describe(folder: str) -> str:
    """The model's versions and policy, in lines for a person."""
    if not os.path.isdir(folder):
        raise ReleaseError(f"there is no model folder {folder}")
    policy = read_policy(folder)
    complete = complete_versions(folder)
    stable = stable_version(folder, policy)
    lines = [f"model {os.path.basename(folder)} in {folder}"]
    versions = []
    for version in published_versions(folder):
        notes = [label for label, labelled in sorted((policy.labels if policy else {}).items())
                 if labelled == version]
        if version == stable and STABLE not in notes:
            notes.append("stable: the newest complete")
        if version not in complete:
            notes.append("incomplete")
        versions.append(f"{version}" + (f" ({', '.join(notes)})" if notes else ""))
    lines.append(f"versions: {', '.join(versions) or 'none'}")
    if policy is None:
        lines.append(f"policy: none ({POLICY_FILE} absent): the newest version that loads serves")
        return "\n".join(lines)
    lines.append(f"policy: {json.dumps(policy.versions.as_json())}")
    if policy.canary_version is not None:
        lines.append(f"canary: version {policy.canary_version}, {policy.canary.percent:g}% of "
                     f"unpinned requests, {policy.canary.mode}")
    if policy.history:
        earlier = ", ".join(f"{entry['stable']} (until {entry.get('until', '?')})"
                            for entry in reversed(policy.history))
        lines.append(f"rollback goes to: {earlier}")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Read the command line; argparse itself exits 2 on a malformed one."""
    parser = argparse.ArgumentParser(prog="python -m service.models.release",
                                     description="Show or change which versions of a model serve.")
    parser.add_argument("--models-dir", default=os.environ.get("MODEL_DIR") or "models",
                        help="the models folder (default: $MODEL_DIR, else models)")
    parser.add_argument("--store", default=os.environ.get("PREDICTION_STORE", ""),
                        help="the prediction store, for live accuracy (default: "
                             "$PREDICTION_STORE)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help="versions, labels, canary and history").add_argument("model")
    canary = commands.add_parser("canary", help="set or end the canary")
    canary.add_argument("model")
    canary.add_argument("version", nargs="?", type=positive_int)
    canary.add_argument("--percent", type=percentage, default=10,
                        help="share of unpinned requests, 0 to 100 (10)")
    canary.add_argument("--mode", choices=(SPLIT, SHADOW), default=SPLIT,
                        help="split: the canary answers its share; shadow: it only sees a copy")
    canary.add_argument("--off", action="store_true", help="end the canary")
    promoted = commands.add_parser("promote", help="make the canary, or a version, stable")
    promoted.add_argument("model")
    promoted.add_argument("version", nargs="?", type=positive_int)
    promoted.add_argument("--require-evidence", action="store_true",
                          help="promote only if live accuracy shows the version no worse "
                               "than stable by more than --margin (exit 3 otherwise)")
    promoted.add_argument("--margin", type=float, default=EVIDENCE_MARGIN,
                          help=f"for --require-evidence ({EVIDENCE_MARGIN})")
    commands.add_parser("rollback", help="make the previous stable version stable again"
                        ).add_argument("model")
    args = parser.parse_args(argv)
    if args.command == "canary" and (args.version is None) == (not args.off):
        parser.error("canary takes a version, or --off")
    if args.command == "promote" and args.require_evidence and not args.store:
        parser.error("--require-evidence reads the prediction store: set PREDICTION_STORE "
                     "or --store")
    return args


def positive_int(text: str) -> int:
    """An argparse type: a version number."""
    if not (text.isascii() and text.isdigit() and int(text) > 0):
        raise argparse.ArgumentTypeError(f"not a version number: {text!r}")
    return int(text)


def percentage(text: str) -> float:
    """An argparse type: a number from 0 to 100."""
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 100, not {text!r}")
    return int(value) if value.is_integer() else value


def main(argv: list[str] | None = None) -> int:
    """Run the command line; print the model's state after a change."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    folder = os.path.join(args.models_dir, args.model)
    try:
        if args.command == "canary" and args.off:
            end_canary(folder)
        elif args.command == "canary":
            set_canary(folder, args.version, args.percent, args.mode)
        elif args.command == "promote":
            if args.require_evidence:
                print("evidence: " + check_evidence(
                    args.store, folder, args.version,
                    Settings.from_env().release_min_feedback, args.margin))
            promote(folder, args.version)
        elif args.command == "rollback":
            roll_back(folder)
        print(describe(folder))
        if args.store:
            print("\n".join(live_accuracy_lines(args.store, folder)))
    except ReleaseError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except EvidenceError as error:
        print(f"error: {error}", file=sys.stderr)
        return NOT_ENOUGH_EVIDENCE
    return 0


if __name__ == "__main__":
    sys.exit(main())
