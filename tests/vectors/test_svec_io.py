"""The .svec format (docs/formats.md): interop JSON, exact float32 round trip, clear errors naming the file."""
import json

import numpy as np
import pytest

from activation_steering import SteeringVector
from activation_steering.config import GlobalConfig

GlobalConfig.set_verbose(False, "SteeringVector")

HAND_WRITTEN = """{
  "model_type": "llama",
  "directions": {
    "0": [0.5, -0.5, 0.5, -0.5],
    "3": [1, 0, 0, 0.0],
    "-1": [0.25, 0.25, 0.25, 0.25e0]
  },
  "explained_variances": {"0": 0.5, "3": 1, "-1": 0.125}
}
"""


def test_hand_written_spec_file_loads(tmp_path):
    path = tmp_path / "hand.svec"
    path.write_text(HAND_WRITTEN)
    vec = SteeringVector.load(str(path))
    assert vec.model_type == "llama"
    assert list(vec.directions) == [0, 3, -1]
    for d in vec.directions.values():
        assert d.dtype == np.float32 and d.shape == (4,)
    np.testing.assert_array_equal(vec.directions[0], np.array([0.5, -0.5, 0.5, -0.5], np.float32))
    np.testing.assert_array_equal(vec.directions[3], np.array([1, 0, 0, 0], np.float32))
    assert vec.explained_variances == {0: 0.5, 3: 1.0, -1: 0.125}
    assert all(type(v) is float for v in vec.explained_variances.values())


def test_file_written_like_the_reference_library_loads(tmp_path):
    # json.dump of {int: list(float32 -> float)} with default separators, as the reference does
    rng = np.random.default_rng(0)
    dirs = {i: rng.standard_normal(16).astype(np.float32) for i in range(3)}
    with open(tmp_path / "ref.svec", "w") as f:
        json.dump({"model_type": "qwen2", "directions": {k: v.tolist() for k, v in dirs.items()},
                   "explained_variances": {k: np.float64(0.1 * k + 0.05) for k in dirs}}, f)
    vec = SteeringVector.load(tmp_path / "ref")  # ".svec" appended
    for k, v in dirs.items():
        assert vec.directions[k].tobytes() == v.tobytes()


def test_round_trip_is_bit_exact_and_spec_shaped(tmp_path):
    rng = np.random.default_rng(1)
    special = np.array([np.float32(1e-45), np.float32(-3.4028235e38), np.float32(1.1754944e-38), 0.0, -0.0,
                        np.float32(0.1), np.float32(1 / 3)], np.float32)
    dirs = {i: (rng.standard_normal(64) * 10.0 ** rng.integers(-30, 30)).astype(np.float32) for i in (0, 5, 11)}
    dirs[7] = np.concatenate([special, rng.standard_normal(57).astype(np.float32)])
    vec = SteeringVector("llama", dirs, {0: 0.5, 5: 0.123456789012345, 11: 1e-300, 7: 1.0})
    written = vec.save(tmp_path / "deep" / "er" / "vec")  # parent folders created, suffix appended
    assert written.endswith("vec.svec")
    data = json.loads((tmp_path / "deep" / "er" / "vec.svec").read_text())
    assert set(data) == {"model_type", "directions", "explained_variances"}
    assert data["model_type"] == "llama" and list(data["directions"]) == ["0", "5", "11", "7"]
    assert all(isinstance(x, float) for x in data["directions"]["0"])
    back = SteeringVector.load(written)
    assert back == vec
    for k in dirs:
        assert back.directions[k].tobytes() == dirs[k].tobytes()
    assert back.explained_variances == vec.explained_variances
    # saving with the suffix already present does not double it
    assert vec.save(str(tmp_path / "x.svec")).endswith("/x.svec")


@pytest.mark.parametrize("content, problem", [
    (HAND_WRITTEN[:70], "not valid JSON.*truncated"),
    ("this is not json", "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    ("[1, 2, 3]", "JSON object"),
    ('{"model_type": "llama", "directions": {"0": [1.0]}}', "missing the key.*explained_variances"),
    ('{"directions": {"0": [1.0]}, "explained_variances": {"0": 1}}', "missing the key.*model_type"),
    ('{"model_type": "m", "directions": {"0": [1.0, 2.0], "1": [1.0]}, "explained_variances": {"0": 1, "1": 1}}',
     "ragged"),
    ('{"model_type": "m", "directions": {"0": [1.0, NaN]}, "explained_variances": {"0": 1}}', "NaN"),
    ('{"model_type": "m", "directions": {"0": [1.0, Infinity]}, "explained_variances": {"0": 1}}', "Infinity"),
    ('{"model_type": "m", "directions": {"0": [1.0, 1e400]}, "explained_variances": {"0": 1}}', "finite float32"),
    ('{"model_type": "m", "directions": {"0": [1.0, 1e39]}, "explained_variances": {"0": 1}}', "finite float32"),
    ('{"model_type": "m", "directions": {"0": [1.0]}, "explained_variances": {"0": NaN}}', "NaN"),
    ('{"model_type": 3, "directions": {"0": [1.0]}, "explained_variances": {"0": 1}}', "model_type"),
    ('{"model_type": "m", "directions": [[1.0]], "explained_variances": {"0": 1}}', "directions"),
    ('{"model_type": "m", "directions": {"0": ["1.0"]}, "explained_variances": {"0": 1}}', "non-number"),
    ('{"model_type": "m", "directions": {"0": [true]}, "explained_variances": {"0": 1}}', "non-number"),
    ('{"model_type": "m", "directions": {"0": 1.0}, "explained_variances": {"0": 1}}', "list of numbers"),
    ('{"model_type": "m", "directions": {"0": []}, "explained_variances": {"0": 1}}', "non-empty"),
    ('{"model_type": "m", "directions": {}, "explained_variances": {}}', "empty"),
    ('{"model_type": "m", "directions": {"a": [1.0]}, "explained_variances": {"a": 1}}', "not an integer"),
    ('{"model_type": "m", "directions": {"1.5": [1.0]}, "explained_variances": {"1.5": 1}}', "not an integer"),
    ('{"model_type": "m", "directions": {"1": [1.0], "01": [2.0]}, "explained_variances": {"1": 1}}', "twice"),
    ('{"model_type": "m", "directions": {"0": [1.0]}, "explained_variances": {"0": "high"}}', "finite number"),
    ('{"model_type": "m", "directions": {"0": [1.0]}, "explained_variances": {"1": 0.5}}', "differ"),
])
def test_malformed_files_raise_naming_file_and_problem(tmp_path, content, problem):
    path = tmp_path / "bad.svec"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ValueError, match=problem) as info:
        SteeringVector.load(str(path))
    assert str(path) in str(info.value)


def test_loading_never_executes_code(tmp_path):
    import pickle

    path = tmp_path / "evil.svec"
    path.write_bytes(pickle.dumps({"model_type": "m"}))
    with pytest.raises(ValueError, match="evil.svec"):
        SteeringVector.load(path)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.svec"):
        SteeringVector.load(tmp_path / "nothere")


def test_save_rejects_bad_vectors(tmp_path):
    with pytest.raises(ValueError, match="NaN or Inf"):
        SteeringVector("m", {0: np.array([1.0, np.nan], np.float32)}, {0: 1.0}).save(tmp_path / "a")
    with pytest.raises(ValueError, match="others have"):
        SteeringVector("m", {0: np.ones(2, np.float32), 1: np.ones(3, np.float32)}, {0: 1.0, 1: 1.0}).save(tmp_path / "a")
    with pytest.raises(ValueError, match="layers of directions"):
        SteeringVector("m", {0: np.ones(2, np.float32)}, {1: 1.0}).save(tmp_path / "a")
    assert not list(tmp_path.iterdir())  # nothing half-written
