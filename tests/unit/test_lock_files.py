"""The hashed lock files are up to date with the requirements they are made from."""

import shutil

from scripts import lockfiles
from tests.support import ROOT

# Every lock, and every requirements file one is made from (those include the rest).
FILES = (*sorted({name for inputs, _ in lockfiles.LOCKS.values() for name in inputs}),
         "requirements-serving.txt", "requirements-codegen.txt", *lockfiles.LOCKS)


def copy_of_the_requirements(folder):
    """The inputs and locks, copied into `folder`."""
    for name in FILES:
        shutil.copy(ROOT / name, folder / name)
    return folder


def test_every_lock_is_up_to_date_with_its_inputs_and_fully_hashed():
    problems = lockfiles.problems()
    assert not problems, (f"{'; '.join(problems)}. Run {lockfiles.LOCK_COMMAND} to bring the "
                          "lock files up to date (docs/security.md, \"Updating a dependency\").")


def test_a_changed_pin_or_a_new_package_makes_its_locks_out_of_date(tmp_path):
    folder = copy_of_the_requirements(tmp_path)
    serving = folder / "requirements-serving.txt"
    serving.write_text(serving.read_text().replace("flask==3.1.3", "flask==3.1.2")
                       + "not-a-locked-package==1.0\n")
    problems = lockfiles.problems(folder)
    # Every lock that holds the serving requirements, directly or through -r.
    def holds_serving(name):
        return (name == "requirements-serving.txt"
                or "-r requirements-serving.txt" in lockfiles.requirement_lines(ROOT / name))

    serving_locks = [lock for lock, (inputs, _) in lockfiles.LOCKS.items()
                     if any(holds_serving(name) for name in inputs)]
    assert set(serving_locks) == {"requirements-serving.lock", "requirements.lock",
                                  "requirements-test.lock"}
    for lock in serving_locks:
        assert f"{lock} is out of date with" in " ".join(problems), problems
        assert f"{lock} has flask 3.1.3, its input pins 3.1.2" in problems
        assert f"{lock} has not-a-locked-package None, its input pins 1.0" in problems


def test_comments_do_not_make_a_lock_out_of_date(tmp_path):
    folder = copy_of_the_requirements(tmp_path)
    test = folder / "requirements-test.txt"
    test.write_text("# a new comment\n\n" + test.read_text().replace("\n", "  # why\n", 1))
    assert lockfiles.problems(folder) == []


def test_a_requirement_without_a_hash_is_found(tmp_path):
    folder = copy_of_the_requirements(tmp_path)
    lock = folder / "requirements-serving.lock"
    lock.write_text(lock.read_text() + "six==1.17.0\n")
    assert lockfiles.problems(folder) == ["requirements-serving.lock: six==1.17.0 has no hash"]


def test_the_images_and_run_tests_install_the_locks_with_their_hashes():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for lock in ("requirements-serving.lock", "requirements.lock", "requirements-codegen.lock"):
        install = next(command for command in dockerfile.split("RUN ")
                       if f"-r /tmp/{lock}" in command)
        assert "--require-hashes" in install and "--only-binary=:all:" in install, lock
    assert "--require-hashes" in (ROOT / "run-tests").read_text()
    assert "-r requirements-test.lock" in (ROOT / "run-tests").read_text()


def test_a_package_has_one_version_in_every_lock_but_the_documented_exceptions(tmp_path):
    folder = copy_of_the_requirements(tmp_path)
    trainer = folder / "requirements.lock"
    trainer.write_text(trainer.read_text().replace("\nnumpy==2.4.6 ", "\nnumpy==2.4.5 "))
    problems = lockfiles.problems(folder)
    assert "requirements.lock has numpy ['2.4.5'], requirements-serving.lock has ['2.4.6']" in (
        problems)
    assert "requirements-test.lock has numpy ['2.4.6'], requirements.lock has ['2.4.5']" in (
        problems)
    # The one exception today, and why: it is the test tools' need, not the images'.
    assert set(lockfiles.TEST_ONLY_VERSIONS) == {"ml-dtypes"}
    assert not any("ml-dtypes" in problem for problem in problems)


def test_a_package_required_with_an_extra_is_locked_with_it():
    # pip --require-hashes refuses `cachecontrol[filecache]>=0.13` (pip-audit's) against a
    # lock that names plain `cachecontrol==0.14.4` once a newer release is out.
    for lock_name in lockfiles.LOCKS:
        for requirement, _ in lockfiles.locked_requirements(ROOT / lock_name):
            name = requirement.split("==")[0].split("[")[0].lower()
            if name in lockfiles.EXTRAS_PINNED:
                assert requirement.startswith(f"{name}[{lockfiles.EXTRAS_PINNED[name]}]=="), (
                    lock_name, requirement)
    assert lockfiles.with_extras("cachecontrol==0.14.4 \\\n") == (
        "cachecontrol[filecache]==0.14.4 \\\n")
