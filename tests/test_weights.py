"""Weight files: bit-exact, byte-identical, no pickle, clear errors."""

import re
import zipfile

import numpy as np
import pytest

from backprop_lab import MLP, load_weights, save_weights


def some_weights(seed=0):
    return MLP([2, 5, 3, 2], init="he", seed=seed).weights


def test_round_trip_is_bit_exact(tmp_path):
    weights = some_weights()
    # Values whose bits a text format would lose, and a float32 layer.
    weights[0][0, 0] = np.nextafter(0.1, 1.0)
    weights[0][1, 0] = -0.0
    weights[1][0, 0] = 5e-324
    weights[2] = weights[2].astype(np.float32)
    path = tmp_path / "final.npz"

    save_weights(path, weights)
    loaded = load_weights(path)

    assert len(loaded) == 3
    for W, W_loaded in zip(weights, loaded, strict=True):
        assert W_loaded.dtype == W.dtype
        assert W_loaded.shape == W.shape
        assert np.array_equal(W_loaded, W)
        assert W_loaded.tobytes() == W.tobytes()


def test_file_is_a_plain_npz_with_keys_w1_to_wl(tmp_path):
    weights = some_weights()
    path = tmp_path / "initial.npz"

    save_weights(path, weights)

    with np.load(path, allow_pickle=False) as archive:
        assert archive.files == ["W1", "W2", "W3"]
        for key, W in zip(archive.files, weights, strict=True):
            assert np.array_equal(archive[key], W)
    assert [p.name for p in tmp_path.iterdir()] == ["initial.npz"]


def test_loaded_weights_build_the_same_net(tmp_path):
    net = MLP([2, 3, 2], seed=0)
    save_weights(tmp_path / "w.npz", net.weights)

    again = MLP.from_weights(load_weights(tmp_path / "w.npz"))

    X = np.random.default_rng(1).random((4, 2))
    assert np.array_equal(again.predict(X), net.predict(X))


def test_same_weights_give_byte_identical_files(tmp_path):
    save_weights(tmp_path / "a.npz", some_weights())
    save_weights(tmp_path / "b.npz", some_weights())

    first = (tmp_path / "a.npz").read_bytes()
    assert first == (tmp_path / "b.npz").read_bytes()
    # The reason: every member carries the fixed 1980-01-01 timestamp.
    with zipfile.ZipFile(tmp_path / "a.npz") as archive:
        assert {info.date_time for info in archive.infolist()} == {
            (1980, 1, 1, 0, 0, 0)
        }
    save_weights(tmp_path / "c.npz", some_weights(seed=1))
    assert (tmp_path / "c.npz").read_bytes() != first


def test_saving_replaces_an_existing_file(tmp_path):
    path = tmp_path / "w.npz"
    save_weights(path, some_weights(seed=1))
    save_weights(path, some_weights(seed=2))

    for W, W_loaded in zip(some_weights(seed=2), load_weights(path), strict=True):
        assert np.array_equal(W, W_loaded)
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, W1=np.array([{"a": 1}, None], dtype=object))

    with pytest.raises(
        ValueError,
        match=rf"^{re.escape(str(path))}: not a readable weights file \(.*pickle",
    ):
        load_weights(path)


def test_wrong_keys_are_refused(tmp_path):
    path = tmp_path / "keys.npz"
    np.savez(path, W1=np.ones((3, 3)), weights2=np.ones((2, 4)))

    with pytest.raises(
        ValueError,
        match=(
            rf"^{re.escape(str(path))}: keys \['W1', 'weights2'\] are not W1 … WL "
            r"\(one array per layer\)$"
        ),
    ):
        load_weights(path)


def test_a_missing_layer_is_refused(tmp_path):
    path = tmp_path / "gap.npz"
    np.savez(path, W1=np.ones((3, 3)), W3=np.ones((2, 4)))

    with pytest.raises(ValueError, match=r"keys \['W1', 'W3'\] are not W1 … WL"):
        load_weights(path)


def test_layers_that_do_not_chain_are_refused(tmp_path):
    path = tmp_path / "chain.npz"
    np.savez(path, W1=np.ones((3, 3)), W2=np.ones((2, 3)))

    with pytest.raises(
        ValueError,
        match=(
            rf"^{re.escape(str(path))}: W2 has shape \(2, 3\); "
            r"expected \(2, 4\) after W1$"
        ),
    ):
        load_weights(path)


def test_non_float_arrays_are_refused(tmp_path):
    path = tmp_path / "ints.npz"
    np.savez(path, W1=np.ones((3, 3), dtype=int))

    with pytest.raises(
        ValueError,
        match=rf"^{re.escape(str(path))}: W1 must be a 2-D float array$",
    ):
        load_weights(path)


@pytest.mark.parametrize("keep", [0, 30, 0.5, -10])
def test_truncated_files_are_refused_naming_the_file(tmp_path, keep):
    whole = tmp_path / "whole.npz"
    save_weights(whole, some_weights())
    data = whole.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep
    path = tmp_path / "cut.npz"
    path.write_bytes(data[:cut])

    with pytest.raises(
        ValueError, match=rf"^{re.escape(str(path))}: not a readable weights file"
    ):
        load_weights(path)


def test_a_missing_file_is_reported_by_name(tmp_path):
    path = tmp_path / "nowhere.npz"
    with pytest.raises(
        ValueError, match=rf"^{re.escape(str(path))}: file not found; run the stage"
    ):
        load_weights(path)
