"""Sparse checkpoints: bitwise round trips, the encoding each tensor gets, the lossy float16 option, bad files."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import paddle
import pytest

from paddle_prune_callback import SparseFileReport, load_sparse, save_sparse

BITS = {np.dtype("float16"): np.uint16, np.dtype("uint16"): np.uint16, np.dtype("float32"): np.uint32,
        np.dtype("float64"): np.uint64}


def bits(a: np.ndarray) -> np.ndarray:
    """The raw bits (bfloat16 tensors come back from ``numpy()`` as uint16 bits already)."""
    return a.view(BITS[a.dtype]) if a.dtype in BITS else a


def pruned(shape, sparsity, seed=0, dtype="float32") -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype(dtype)
    w[rng.random(shape) < sparsity] = 0
    return w


def n_m(shape, n, m, axis, seed=0) -> np.ndarray:
    """Random weights with the smallest |w| of every group of m along ``axis`` zeroed, n kept (numpy only)."""
    w = np.random.default_rng(seed).standard_normal(shape).astype("float32")
    g = np.moveaxis(w, axis, -1).copy()
    for start in range(0, g.shape[-1], m):
        block = g[..., start:start + m]
        drop = np.argsort(np.abs(block), axis=-1)[..., :max(block.shape[-1] - n, 0)]
        np.put_along_axis(block, drop, 0.0, axis=-1)
        g[..., start:start + m] = block
    return np.moveaxis(g, -1, axis)


def stored_arrays(path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def test_round_trip_is_bitwise_for_every_dtype_and_encoding(tmp_path):
    w = pruned((64, 48), 0.9)
    w[3, 4], w[5, 6], w[7, 8] = np.nan, np.inf, -np.inf
    state = {
        "f32": paddle.to_tensor(w),
        "f64": paddle.to_tensor(pruned((30, 7), 0.5, seed=1, dtype="float64")),
        "f16": paddle.to_tensor(pruned((40, 9), 0.8, seed=2, dtype="float16")),
        "bf16": paddle.to_tensor(pruned((33, 10), 0.9, seed=3)).astype("bfloat16"),
        "bf16_dense": paddle.to_tensor(pruned((5, 5), 0.0, seed=4)).astype("bfloat16"),
        "dense": paddle.to_tensor(pruned((16, 16), 0.1, seed=5)),
        "conv24": paddle.to_tensor(n_m((6, 10, 3, 3), 2, 4, axis=1)),
        "lin14": paddle.to_tensor(n_m((18, 5), 1, 4, axis=0, seed=6)),
        "ints": paddle.to_tensor(np.array([0, 0, 0, 7, 0], dtype="int64")),
        "flags": paddle.to_tensor(np.array([True, False])),
        "scalar": paddle.to_tensor(np.float32(2.5)),
        "empty": paddle.zeros([0, 4]),
    }
    report = save_sparse(state, tmp_path / "m.npz")
    assert isinstance(report, SparseFileReport) and report.max_abs_error == 0.0 and report.values_dtype is None
    assert report.encodings == {"f32": "bitmask", "f64": "bitmask", "f16": "bitmask", "bf16": "bitmask",
                                "bf16_dense": "dense", "dense": "dense", "conv24": "2:4", "lin14": "1:4",
                                "ints": "dense", "flags": "dense", "scalar": "dense", "empty": "dense"}
    back = load_sparse(tmp_path / "m.npz")
    assert list(back) == list(state)
    for name, tensor in state.items():
        assert back[name].dtype == tensor.dtype and back[name].shape == tensor.shape, name
        np.testing.assert_array_equal(bits(back[name].numpy()), bits(tensor.numpy()), err_msg=name)
    assert back["bf16"].numpy().dtype == np.uint16          # raw bits: the bf16 values themselves came back
    np.testing.assert_array_equal(back["bf16"].astype("float32").numpy(), state["bf16"].astype("float32").numpy())


def test_negative_zero_comes_back_as_positive_zero_only_in_sparse_encodings(tmp_path):
    sparse, dense = pruned((16, 16), 0.9), pruned((8, 8), 0.0)
    sparse[sparse == 0] = -0.0
    dense[0, 0] = -0.0
    save_sparse({"sparse": paddle.to_tensor(sparse), "dense": paddle.to_tensor(dense)}, tmp_path / "z.npz")
    back = load_sparse(tmp_path / "z.npz")
    got = back["sparse"].numpy()
    np.testing.assert_array_equal(got, sparse)                                      # equal as numbers
    assert not np.signbit(got[sparse == 0]).any() and np.signbit(sparse[sparse == 0]).all()
    np.testing.assert_array_equal(bits(back["dense"].numpy()), bits(dense))         # dense keeps the sign bit


@pytest.mark.parametrize("dtype, negative_zero", [("float16", 0x8000), ("bfloat16", 0x8000)])
def test_negative_zero_in_half_types_is_a_zero(tmp_path, dtype, negative_zero):
    w = paddle.to_tensor(pruned((32, 8), 0.9) * np.where(np.arange(8) % 2, -1, 1).astype("float32")).astype(dtype)
    raw = w.numpy().view(np.uint16)
    assert (raw == negative_zero).sum() > 0                       # the negated zeros really are -0.0 bits
    report = save_sparse({"w": w}, tmp_path / "h.npz")
    assert report.encodings == {"w": "bitmask"}
    mask = stored_arrays(tmp_path / "h.npz")["0.mask"]
    assert int(np.unpackbits(mask).sum()) == int(((raw & 0x7FFF) != 0).sum())    # -0.0 not stored as a value
    got = load_sparse(tmp_path / "h.npz")["w"].numpy().view(np.uint16)
    np.testing.assert_array_equal(got, np.where(raw == negative_zero, 0, raw))


def test_n_m_index_is_chosen_only_where_it_is_smaller_than_the_bit_mask(tmp_path):
    state = {"lin24": n_m((64, 32), 2, 4, axis=0), "conv24": n_m((8, 64, 3, 3), 2, 4, axis=1),
             "wrong_axis": n_m((8, 64, 3, 3), 2, 4, axis=0),           # 2:4 across outputs: not ASP's layout
             "lin48": n_m((64, 32), 4, 8, axis=0),                     # 8 bits per group either way
             "lin18": n_m((64, 32), 1, 8, axis=0)}
    report = save_sparse(state, tmp_path / "nm.npz")
    assert report.encodings == {"lin24": "2:4", "conv24": "2:4", "wrong_axis": "bitmask", "lin48": "bitmask",
                                "lin18": "1:8"}
    arrays = stored_arrays(tmp_path / "nm.npz")
    # 2:4: 6 position sets, 3 groups per byte, against 4 bits per group for the bit-mask
    assert arrays["0.index"].nbytes == -(-64 * 32 // 4 // 3) < 64 * 32 // 8
    assert arrays["0.values"].size == 64 * 32 // 2
    back = load_sparse(tmp_path / "nm.npz")
    for name, w in state.items():
        np.testing.assert_array_equal(back[name].numpy(), w, err_msg=name)


def test_partial_last_group_and_groups_with_fewer_than_n_non_zeros(tmp_path):
    w = n_m((10, 300), 2, 4, axis=0)        # 10 inputs: groups of 4, 4 and a padded 2
    w[0:4, 0] = [0.0, 0.0, 0.0, 1.5]        # a group with one non-zero
    w[4:8, 1] = 0.0                         # and one with none
    conv = n_m((4, 6, 2), 1, 4, axis=1)     # Conv1D weight, 6 input channels
    report = save_sparse({"w": w, "conv": conv}, tmp_path / "p.npz")
    assert report.encodings == {"w": "2:4", "conv": "1:4"}
    back = load_sparse(tmp_path / "p.npz")
    np.testing.assert_array_equal(back["w"].numpy(), w)
    np.testing.assert_array_equal(back["conv"].numpy(), conv)


class Net(paddle.nn.Layer):
    def __init__(self, width=32):
        super().__init__()
        self.conv = paddle.nn.Conv2D(8, 16, 3)
        self.bn = paddle.nn.BatchNorm2D(16)
        self.fc = paddle.nn.Linear(width, 10)


def test_network_round_trip_with_buffers_and_loading_into_a_network(tmp_path):
    net = Net()
    with paddle.no_grad():
        net.fc.weight.set_value(paddle.to_tensor(pruned((32, 10), 0.95)))
        net.conv.weight.set_value(paddle.to_tensor(n_m((16, 8, 3, 3), 2, 4, axis=1)))
        net.bn._mean.set_value(paddle.rand([16]))
    report = save_sparse(net, tmp_path / "net.npz")
    assert set(report.encodings) == set(net.state_dict())
    assert report.encodings["fc.weight"] == "bitmask" and report.encodings["conv.weight"] == "2:4"
    fresh = Net()
    state = load_sparse(tmp_path / "net.npz", network=fresh)
    for name, tensor in net.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[name].numpy(), tensor.numpy(), err_msg=name)
        np.testing.assert_array_equal(state[name].numpy(), tensor.numpy(), err_msg=name)


def test_float16_values_are_smaller_and_report_their_largest_error(tmp_path):
    w = pruned((256, 128), 0.9, dtype="float64") * 3
    state = {"w": paddle.to_tensor(w.astype("float32")), "w64": paddle.to_tensor(w),
             "bf": paddle.to_tensor(w.astype("float32")).astype("bfloat16")}
    exact = save_sparse(state, tmp_path / "exact.npz")
    lossy = save_sparse(state, tmp_path / "half.npz", values_dtype="float16")
    assert lossy.file_bytes < 0.75 * exact.file_bytes and lossy.values_dtype == "float16"
    expected = max(np.abs(w.astype(np.float32).astype(np.float16).astype(np.float64) - w.astype(np.float32)).max(),
                   np.abs(w.astype(np.float16).astype(np.float64) - w).max())
    assert lossy.max_abs_error == expected > 0
    back = load_sparse(tmp_path / "half.npz")
    assert back["w"].dtype == paddle.float32 and back["w64"].dtype == paddle.float64
    assert np.abs(back["w"].numpy().astype(np.float64) - w.astype(np.float32)).max() == pytest.approx(expected)
    np.testing.assert_array_equal(back["bf"].numpy(), state["bf"].numpy())          # bfloat16 is left as it is
    assert (back["w"].numpy() == 0).sum() == (w == 0).sum()


def rewrite(src, dst, edit) -> None:
    arrays = stored_arrays(src)
    header = json.loads(str(arrays.pop("manifest")))
    edit(header, arrays)
    np.savez_compressed(dst, manifest=np.array(json.dumps(header)), **arrays)


@pytest.fixture
def saved(tmp_path):
    state = {"w": paddle.to_tensor(pruned((32, 16), 0.9)), "lin24": paddle.to_tensor(n_m((32, 8), 2, 4, axis=0)),
             "dense": paddle.to_tensor(pruned((4, 4), 0.0))}
    save_sparse(state, tmp_path / "ok.npz")
    return tmp_path / "ok.npz"


def set_shape(name, shape):
    def edit(header, arrays):
        next(t for t in header["tensors"] if t["name"] == name)["shape"] = shape
    return edit


@pytest.mark.parametrize("edit, match", [
    (lambda h, a: h.update(version=2), r"has format version 2; this paddle_prune_callback reads version 1"),
    (lambda h, a: h.update(format="other"), r"is not a sparse checkpoint written by save_sparse"),
    (set_shape("w", [32, 17]), r"'w' is damaged: its bit-mask has 64 bytes for shape \[32, 17\]"),
    (set_shape("dense", [4, 5]), r"'dense' is damaged: it holds 16 values for shape \[4, 5\] \(20 values\)"),
    (set_shape("lin24", [32, 9]), r"'lin24' is damaged: its 2:4 index and values do not fit its shape \[32, 9\]"),
    (lambda h, a: a.update({"0.values": a["0.values"][:-1]}), r"'w' is damaged: its bit-mask marks \d+ non-zeros "
                                                              r"but it holds \d+ values"),
    (lambda h, a: a.pop("0.mask"), r"'w' is damaged: some of its arrays are missing"),
])
def test_damaged_or_foreign_files_are_refused(saved, tmp_path, edit, match):
    rewrite(saved, tmp_path / "bad.npz", edit)
    with pytest.raises(ValueError, match=match):
        load_sparse(tmp_path / "bad.npz")


def test_truncated_missing_and_non_npz_files(saved, tmp_path):
    data = saved.read_bytes()
    for cut in (len(data) // 2, len(data) - 10):
        (tmp_path / "cut.npz").write_bytes(data[:cut])
        with pytest.raises(ValueError, match=r"cannot be read .*; it is truncated or not a file written by save_sparse"):
            load_sparse(tmp_path / "cut.npz")
    with pytest.raises(FileNotFoundError, match=r"sparse checkpoint '.*nope.npz' does not exist"):
        load_sparse(tmp_path / "nope.npz")
    np.savez(tmp_path / "plain.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match=r"cannot be read \(KeyError"):
        load_sparse(tmp_path / "plain.npz")
    assert zipfile.is_zipfile(saved)


def test_a_network_that_does_not_match_gets_nothing(tmp_path):
    save_sparse(Net(width=32), tmp_path / "net.npz")
    other = Net(width=48)
    before = {n: t.numpy().copy() for n, t in other.state_dict().items()}
    with pytest.raises(ValueError, match=r"'fc.weight' has shape \[32, 10\] and dtype float32, but Net expects "
                                         r"shape \[48, 10\] and dtype float32"):
        load_sparse(tmp_path / "net.npz", network=other)
    for name, value in before.items():
        np.testing.assert_array_equal(other.state_dict()[name].numpy(), value)
    with pytest.raises(ValueError, match=r"does not match Linear: missing \['bias', 'weight'\], unexpected \[.*"):
        load_sparse(tmp_path / "net.npz", network=paddle.nn.Linear(2, 2))


def test_bad_arguments_write_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"`values_dtype` must be None \(lossless\) or 'float16', got 'int8'"):
        save_sparse({"w": paddle.ones([2])}, tmp_path / "a.npz", values_dtype="int8")
    with pytest.raises(ValueError, match=r"values_dtype='float16' cannot hold 'big': its largest \|value\| is "
                                         r"100000, above float16's 65504"):
        save_sparse({"big": paddle.to_tensor([1e5, 0.0])}, tmp_path / "a.npz", values_dtype="float16")
    with pytest.raises(TypeError, match=r"`obj` must be a paddle.nn.Layer or a state dict"):
        save_sparse([paddle.ones([2])], tmp_path / "a.npz")
    with pytest.raises(TypeError, match=r"'w' is a list; a state dict must map names to paddle.Tensor"):
        save_sparse({"w": [1.0]}, tmp_path / "a.npz")
    assert list(tmp_path.iterdir()) == []
