"""Each preprocessing op, eagerly and inside tf.data; random ops only when training."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfpipe.data import preprocess


def step(op, training=False, **args):
    (fn,) = preprocess.build([{"op": op, **args}], training=training)
    return fn


def in_dataset(fn, x, y):
    """fn applied inside tf.data (graph mode), for comparison with the eager call."""
    ds = tf.data.Dataset.from_tensors((x, y)).map(fn)
    return next(iter(ds))


@pytest.fixture(scope="module", name="jpeg")
def _jpeg():
    rng = np.random.default_rng(0)
    img = (rng.random((64, 48, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_decode_crop_jpeg_eval_is_the_centre_of_the_scaled_image(jpeg):
    fn = step("decode_crop_jpeg", size=8, ratio=4)
    x, _ = fn(tf.constant(jpeg), 0)
    full = tf.io.decode_jpeg(jpeg, channels=3, ratio=4)  # 16 x 12
    assert x.shape == (8, 8, 3)
    assert np.array_equal(x.numpy(), full.numpy()[4:12, 2:10])
    assert np.array_equal(in_dataset(fn, tf.constant(jpeg), 0)[0].numpy(), x.numpy())


def test_decode_crop_jpeg_training_takes_random_windows(jpeg):
    fn = step("decode_crop_jpeg", training=True, size=8, ratio=4)
    crops = {fn(tf.constant(jpeg), 0)[0].numpy().tobytes() for _ in range(12)}
    assert len(crops) > 1
    ds = tf.data.Dataset.from_tensors((tf.constant(jpeg), 0)).repeat(5).map(fn)
    assert all(x.shape == (8, 8, 3) for x, _ in ds)


def test_decode_image_handles_png_and_jpeg():
    img = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    x, _ = step("decode_image")(tf.constant(buf.getvalue()), 0)
    assert np.array_equal(x.numpy(), img)
    x2, _ = in_dataset(step("decode_image"), tf.constant(buf.getvalue()), 0)
    assert np.array_equal(x2.numpy(), img)


def test_resize_random_crop_and_flip():
    img = tf.reshape(tf.range(6 * 6 * 1, dtype=tf.float32), [6, 6, 1])
    assert step("resize", size=[3, 3])(img, 0)[0].shape == (3, 3, 1)
    assert step("resize", size=[3, 3])(tf.stack([img, img]), 0)[0].shape == (2, 3, 3, 1)  # batched too
    centre = step("random_crop", size=[2, 2])(img, 0)[0]
    assert np.array_equal(centre.numpy()[..., 0], img.numpy()[2:4, 2:4, 0])
    crops = {step("random_crop", training=True, size=[2, 2])(img, 0)[0].numpy().tobytes() for _ in range(15)}
    assert len(crops) > 1
    assert np.array_equal(step("random_flip")(img, 0)[0].numpy(), img.numpy())  # eval: identity
    flips = [step("random_flip", training=True)(img, 0)[0].numpy() for _ in range(20)]
    flipped = [f for f in flips if not np.array_equal(f, img.numpy())]
    assert flipped and all(np.array_equal(f, img.numpy()[:, ::-1]) for f in flipped)


def test_normalize_rescale_log1p():
    x = tf.constant([[1.0, 10.0], [3.0, 30.0]])
    out, _ = step("normalize", mean=[2.0, 20.0], std=[1.0, 10.0])(x, 0)
    assert np.allclose(out.numpy(), [[-1, -1], [1, 1]])
    assert np.allclose(step("rescale", scale=0.5, offset=1)(x, 0)[0].numpy(), [[1.5, 6], [2.5, 16]])
    assert np.allclose(step("log1p")(tf.constant([-3.0, 0.0, np.e - 1]), 0)[0].numpy(), [0, 0, 1])
    mean, std = preprocess.compute_stats(tf.data.Dataset.from_tensors((x, 0)))
    assert np.allclose(mean, [2, 20]) and np.allclose(std, [1, 10])


def test_labels_one_hot_and_binary():
    assert step("one_hot", num_classes=3)(0, tf.constant(2))[1].numpy().tolist() == [0, 0, 1]
    y = step("binary_label")(0, tf.constant([1, 0]))[1]
    assert y.dtype == tf.float32 and y.numpy().tolist() == [[1.0], [0.0]]


def test_hash_vocab_pack_work_per_example_and_per_batch():
    row = {"C1": tf.constant("a"), "C2": tf.constant("b"), "I10": tf.constant(1.0), "I2": tf.constant(2.0)}
    batch = {k: tf.stack([v, v]) for k, v in row.items()}
    hashed, _ = step("hash_columns", columns=["C*"], num_bins=7)(row, 0)
    assert hashed["C1"].dtype == tf.int64 and 0 <= int(hashed["C1"]) < 7
    hb, _ = step("hash_columns", columns=["C*"], num_bins=7)(batch, 0)
    assert hb["C1"].numpy().tolist() == [int(hashed["C1"])] * 2
    packed, _ = step("pack", groups={"numeric": ["I*"]}, keep_rest=True)(row, 0)
    assert packed["numeric"].numpy().tolist() == [2.0, 1.0]  # natural order: I2 before I10
    assert set(packed) == {"numeric", "C1", "C2"}
    pb, _ = step("pack", groups={"numeric": ["I*"]})(batch, 0)
    assert pb["numeric"].shape == (2, 2) and set(pb) == {"numeric"}
    lookup = step("vocab_lookup", column="C1", vocabulary=["z", "a"])
    assert int(lookup(row, 0)[0]["C1"]) == 1
    assert int(lookup({**row, "C1": tf.constant("new")}, 0)[0]["C1"]) == 2  # the OOV bucket
    assert in_dataset(lookup, row, 0)[0]["C1"].numpy() == 1


def test_drop_missing_keeps_complete_rows():
    keep = step("drop_missing", columns=["I1", "C1"])
    rows = {"I1": tf.constant([1.0, np.nan, 2.0]), "C1": tf.constant(["x", "y", ""])}
    assert keep(rows, tf.constant([0, 0, 0])).numpy().tolist() == [True, False, False]
    ds = tf.data.Dataset.from_tensor_slices((rows, tf.constant([0, 1, 2]))).filter(keep)
    assert [int(y) for _, y in ds] == [0]


def test_check_steps_names_the_bad_step():
    with pytest.raises(ValueError, match=r"data.map.steps\[1\].op: expected one of .*got 'blur'"):
        preprocess.check_steps([{"op": "random_flip"}, {"op": "blur"}])
    with pytest.raises(ValueError, match=r"steps\[0\] \(resize\): .*its arguments are: size, key, method"):
        preprocess.check_steps([{"op": "resize", "sise": [3, 3]}])
    with pytest.raises(ValueError, match=r"steps\[0\] \(decode_image\): runs on one example at a time"):
        preprocess.check_steps([{"op": "decode_image"}], vectorized=True)
    with pytest.raises(ValueError, match="'training' is set by the pipeline"):
        preprocess.check_steps([{"op": "random_flip", "training": True}])
