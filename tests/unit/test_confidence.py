"""Honest confidence: temperature fitting, ECE, the threshold's choice, and the "unknown"
answer on every face (/predict, V2 REST, gRPC), with its metric."""

import io
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY

from model_training import calibration, ood
from service.grpc.servicer import Call, InferenceServicer
from service.models.artifact import POLICY_FILE
from service.models.confidence import ThresholdError, parse_threshold, version_threshold
from service.models.policy import PolicyError, parse_policy
from service.serving import serving_of
from tests import support
from tests.unit.fakes import ColourLoader
from tests.unit.test_grpc_servicer import pixels_request


def softmax(logits):
    exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def overconfident_sample(true_temperature, count=20_000, classes=10, seed=0):
    """Model probabilities softmax(z), and labels drawn from softmax(z / true_temperature)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (count, classes))
    truth = softmax(logits / true_temperature)
    drawn = rng.random((count, 1))
    labels = np.minimum((truth.cumsum(axis=1) < drawn).sum(axis=1), classes - 1)
    return softmax(logits), labels


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.0])
def test_the_fitted_temperature_is_the_one_the_labels_were_drawn_with(true_temperature):
    probabilities, labels = overconfident_sample(true_temperature)
    fitted = calibration.fit_temperature(probabilities, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.06)
    scaled = calibration.scale(probabilities, fitted)
    # Scaling never changes the top label; it lowers the NLL and the ECE.
    assert (scaled.argmax(axis=1) == probabilities.argmax(axis=1)).all()
    if true_temperature != 1.0:
        assert (calibration.negative_log_likelihood(scaled, labels)
                < calibration.negative_log_likelihood(probabilities, labels))
        assert (calibration.expected_calibration_error(scaled, labels)
                < calibration.expected_calibration_error(probabilities, labels) / 2)


def test_a_validation_split_all_right_drives_the_temperature_to_the_bound():
    probabilities = softmax(np.array([[2.0, 0.0, 0.0]] * 50))
    fitted = calibration.fit_temperature(probabilities, np.zeros(50, int))
    assert calibration.at_bound(fitted) and not calibration.at_bound(1.0)


def test_ece_weighs_each_bins_gap_by_its_share_of_images():
    # Four answers at 0.9 confidence, three right: gap 0.15 over 4 of 8 images; four at
    # 0.6, all right: gap 0.4 over the other 4.
    probabilities = np.array([[0.9, 0.1]] * 4 + [[0.4, 0.6]] * 4)
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    assert calibration.expected_calibration_error(probabilities, labels) == pytest.approx(
        0.5 * 0.15 + 0.5 * 0.4)
    bins = calibration.reliability_bins(probabilities, labels)
    assert len(bins) == 15 and sum(entry["count"] for entry in bins) == 8
    assert bins[13] == {"count": 4, "confidence": pytest.approx(0.9), "accuracy": 0.75}


def test_a_confidence_of_one_falls_in_the_last_bin():
    bins = calibration.reliability_bins(np.array([[1.0, 0.0]]), np.array([0]))
    assert bins[-1]["count"] == 1


def test_nll_is_the_mean_negative_log_of_the_true_class():
    probabilities = np.array([[0.5, 0.5], [0.25, 0.75]])
    assert calibration.negative_log_likelihood(probabilities, np.array([0, 1])) == pytest.approx(
        -(np.log(0.5) + np.log(0.75)) / 2)


def test_the_threshold_marks_at_most_the_allowed_share_of_validation_unknown():
    rng = np.random.default_rng(1)
    validation = rng.uniform(0.3, 1.0, 1000)
    ood_sets = {"easy": rng.uniform(0.0, 0.35, 200), "hard": rng.uniform(0.2, 0.9, 200)}
    threshold = ood.choose_threshold(validation, ood_sets, max_in_distribution_unknown=0.05)
    assert (validation < threshold).mean() <= 0.05
    # Every easy picture is below 0.35, which the cap allows (about 0.3 + 0.7 * 0.05).
    assert 0.3 <= threshold <= 0.335 and round(threshold, 2) == threshold
    loose = ood.choose_threshold(validation, ood_sets, max_in_distribution_unknown=0.5)
    assert loose > threshold


def test_a_threshold_is_never_chosen_where_nothing_separates():
    same = np.full(100, 0.9)
    assert ood.choose_threshold(same, {"same": same.copy()}) == 0.0


def test_auroc_is_reported_per_set_with_the_share_marked_unknown():
    test = np.array([0.9, 0.8, 0.7, 0.6])
    report = ood.measure(test, {"apart": np.array([0.1, 0.2]), "mixed": np.array([0.85, 0.65])},
                         threshold=0.65)
    assert report["apart"] == {"images": 2, "auroc": 1.0, "share_unknown": 1.0}
    assert report["mixed"]["auroc"] == 0.5 and report["mixed"]["share_unknown"] == 0.0
    assert report["test"] == {"images": 4, "share_unknown": 0.25}


@pytest.mark.parametrize("input_shape, own, names", [
    ((16, 16, 3), None, ["digits", "noise", "solid colours", "photos"]),
    ((8, 8, 1), "digits", ["noise", "solid colours", "photos"])])
def test_the_ood_sets_come_at_the_models_input_size(input_shape, own, names):
    sets = ood.ood_sets(input_shape, seed=0, own_dataset=own)
    assert list(sets) == names
    for images in sets.values():
        assert images.dtype == np.uint8 and images.shape[1:] == input_shape
    assert len(sets["photos"]) == 6 * len(ood.PHOTOS)
    assert "chelsea" not in ood.PHOTOS and "cat" not in ood.PHOTOS
    assert "horse" not in ood.PHOTOS
    first, second = ood.halves(sets["noise"], seed=0)
    assert len(first) + len(second) == ood.SET_SIZE


@pytest.mark.parametrize("raw", ["1.5", "-0.1", "nan", "high", "", True, None, [0.5]])
def test_a_threshold_outside_zero_to_one_is_refused(raw):
    with pytest.raises(ThresholdError):
        parse_threshold(raw)


def test_a_version_without_a_threshold_is_never_unknown():
    assert version_threshold({}) == 0.0 and version_threshold({"min_confidence": 0.48}) == 0.48


def unknown_count(version="7"):
    return REGISTRY.get_sample_value("unknown_predictions_total", {
        "model": "colours", "version": version, "version_label": "stable"}) or 0.0


@pytest.fixture
def cautious(make_client):
    """The app serving a ColourModel whose min_confidence is 0.9."""
    return make_client(loader=ColourLoader(min_confidence=0.9))


def grey_and_red():
    """A multipart body of a plain grey picture (a third for each colour) and a red one."""
    grey = support.encode(Image.new("RGB", (16, 16), (128, 128, 128)), "PNG")
    red = support.encode(Image.new("RGB", (16, 16), (250, 10, 10)), "PNG")
    return {"file": [(io.BytesIO(grey), "grey.jpg", "image/jpeg"),
                     (io.BytesIO(red), "red.jpg", "image/jpeg")]}


def test_predict_withholds_the_label_below_the_threshold_and_keeps_the_guesses(cautious):
    before = unknown_count()
    body = cautious.post("/predict", data=grey_and_red(),
                         content_type="multipart/form-data").get_json()
    grey, red = body["predictions"]
    assert grey["label"] is None and grey["unknown"] is True
    assert grey["confidence"] == grey["top_k"][0]["confidence"] < 0.9
    assert len(grey["top_k"]) == 3 and all(entry["label"] for entry in grey["top_k"])
    assert red["label"] == "red" and red["unknown"] is False
    assert unknown_count() == before + 1


@pytest.mark.parametrize("threshold, unknown", [("0", [False, False]), ("1", [True, True])])
def test_a_request_may_give_its_own_threshold(cautious, threshold, unknown):
    body = cautious.post("/predict", query_string={"min_confidence": threshold},
                         data=grey_and_red(), content_type="multipart/form-data").get_json()
    assert [prediction["unknown"] for prediction in body["predictions"]] == unknown


def test_a_bad_threshold_on_predict_is_a_clear_400(cautious):
    response = cautious.post("/predict", query_string={"min_confidence": "2"},
                             data=grey_and_red(), content_type="multipart/form-data")
    support.assert_error(response, 400, "invalid_min_confidence")


def v2_pixels(colours, parameters=None, outputs=None):
    pixels = np.zeros((len(colours), 16, 16, 3), np.uint8)
    for index, colour in enumerate(colours):
        pixels[index] = colour
    request = {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": list(pixels.shape),
                           "data": pixels.ravel().tolist()}]}
    if parameters is not None:
        request["parameters"] = parameters
    if outputs is not None:
        request["outputs"] = outputs
    return request


def test_v2_gives_the_verdict_in_the_unknown_output(cautious):
    answer = cautious.post("/v2/models/colours/infer",
                           json=v2_pixels([(128, 128, 128), (250, 10, 10)])).get_json()
    outputs = {output["name"]: output for output in answer["outputs"]}
    assert outputs["unknown"] == {"name": "unknown", "datatype": "BOOL", "shape": [2],
                                  "data": [True, False]}
    assert outputs["probabilities"]["shape"] == [2, 3]
    metadata = cautious.get("/v2/models/colours").get_json()
    assert metadata["parameters"]["min_confidence"] == 0.9
    assert {"name": "unknown", "datatype": "BOOL", "shape": [-1]} in metadata["outputs"]


def test_v2_classification_strings_stay_as_they_are_beside_the_verdict(cautious):
    request = v2_pixels([(128, 128, 128)], outputs=[
        {"name": "probabilities", "parameters": {"classification": 2}}, {"name": "unknown"}])
    outputs = cautious.post("/v2/models/colours/infer", json=request).get_json()["outputs"]
    assert outputs[0]["datatype"] == "BYTES" and outputs[0]["data"][0].count(":") == 2
    assert outputs[1]["data"] == [True]


@pytest.mark.parametrize("threshold, verdicts", [(0, [False, False]), (1.0, [True, True])])
def test_v2_takes_a_request_parameter_for_the_threshold(cautious, threshold, verdicts):
    request = v2_pixels([(128, 128, 128), (250, 10, 10)], {"min_confidence": threshold},
                        [{"name": "unknown"}])
    [output] = cautious.post("/v2/models/colours/infer", json=request).get_json()["outputs"]
    assert output["data"] == verdicts


@pytest.mark.parametrize("threshold", [1.5, "high", True])
def test_v2_refuses_a_bad_threshold_in_its_own_error_shape(cautious, threshold):
    request = v2_pixels([(128, 128, 128)], {"min_confidence": threshold})
    response = cautious.post("/v2/models/colours/infer", json=request)
    assert response.status_code == 400 and "min_confidence" in response.get_json()["error"]


def test_grpc_gives_the_verdict_and_takes_the_parameter(make_client):
    client = make_client(loader=ColourLoader(min_confidence=0.9))
    servicer = InferenceServicer(serving_of(client.application), ThreadPoolExecutor(2))
    grey = pixels_request((128, 128, 128))
    answer = servicer.model_infer(grey, Call({}, "test"))
    assert [output.name for output in answer.outputs] == ["probabilities", "unknown"]
    assert answer.outputs[1].datatype == "BOOL"
    assert np.frombuffer(answer.raw_output_contents[1], np.bool_).tolist() == [True]
    grey.parameters["min_confidence"].double_param = 0.2
    answer = servicer.model_infer(grey, Call({}, "test"))
    assert np.frombuffer(answer.raw_output_contents[1], np.bool_).tolist() == [False]
    typed = pixels_request((128, 128, 128))
    typed.inputs[0].contents.uint_contents.extend(typed.raw_input_contents[0])
    del typed.raw_input_contents[:]
    answer = servicer.model_infer(typed, Call({}, "test"))
    assert list(answer.outputs[1].contents.bool_contents) == [True]


@pytest.mark.parametrize("value", [0, 0.6, 1])
def test_serving_json_may_carry_a_threshold_and_the_release_steps_keep_it(value):
    policy = parse_policy(json.dumps({"version_labels": {"stable": 2},
                                      "min_confidence": value}).encode())
    assert policy.min_confidence == value
    promoted = policy.promoted(3, 2, by="test")
    assert parse_policy(promoted.encode()).min_confidence == value
    assert "min_confidence" not in parse_policy(b"{}").as_json()


@pytest.mark.parametrize("value", [1.5, -0.1, "0.5", True, [0.5]])
def test_a_threshold_in_serving_json_outside_zero_to_one_is_refused(value):
    with pytest.raises(PolicyError, match="min_confidence must be a number from 0 to 1"):
        parse_policy(json.dumps({"min_confidence": value}).encode())


def test_serving_jsons_threshold_overrides_the_versions_and_a_requests_overrides_both(
        make_client, models_folder):
    (models_folder / "colours" / POLICY_FILE).write_text(json.dumps({"min_confidence": 0.2}))
    client = make_client(loader=ColourLoader(min_confidence=0.9))

    def verdicts(query=None):
        body = client.post("/predict", query_string=query, data=grey_and_red(),
                           content_type="multipart/form-data").get_json()
        return [prediction["unknown"] for prediction in body["predictions"]]

    assert verdicts() == [False, False]  # 0.2 from serving.json, not the version's 0.9
    assert verdicts({"min_confidence": "0.5"}) == [True, False]
