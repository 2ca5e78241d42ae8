"""Trial loads measure real versions, and the upper bound read from the file is never less."""

import pytest

from service.models.footprint import MIB, trial_load, upper_bound_bytes
from service.models.inference import ModelLoadError
from tests import support

OPTIONS = {"warm_batch_size": 32, "threads": 1}


@pytest.mark.parametrize("all_core_threads", [1, 2])
@pytest.mark.parametrize("version", ["cifar10/2", "digits/1", "tiny"])
def test_the_bound_is_above_what_a_trial_load_measures(version, all_core_threads,
                                                      trained_models):
    folder = (trained_models / "shapes" / "1" if version == "tiny"
              else support.ROOT / "models" / version)
    measured = trial_load(str(folder), all_core_threads=all_core_threads, **OPTIONS)
    bound = upper_bound_bytes(str(folder), all_core_threads=all_core_threads, **OPTIONS)
    assert MIB / 4 < measured <= bound < 4 * measured + 8 * MIB, (measured / MIB, bound / MIB)


def test_a_trial_of_a_broken_version_says_why_and_its_bound_is_unknown(models_dir):
    support.publish_copy(models_dir, 2, break_model=True)
    folder = str(models_dir / "shapes" / "2")
    with pytest.raises(ModelLoadError, match="unreadable model.tflite"):
        trial_load(folder, all_core_threads=1, **OPTIONS)
    assert upper_bound_bytes(folder, all_core_threads=1, **OPTIONS) == 0
