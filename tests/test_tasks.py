"""Tasks: batch format, determinism by (seed, split, index), and labels recomputed from inputs."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from seqmodels import tasks
from seqmodels.tasks import arrows, groups, listops, shapes
from seqmodels.tasks.base import epoch_indices
from seqmodels.tasks.files import FileDataset

OPTIONAL = {"digits": "sklearn", "ucr": "aeon"}


def _needs(name: str) -> None:
    module = OPTIONAL.get(name)
    if module and importlib.util.find_spec(module) is None:
        pytest.skip(f"task {name!r} needs the optional package {module!r}")


# file-backed tasks need files on disk: test_file_datasets.py writes them and runs the same checks
GENERATED = [name for name in tasks.task_names() if not issubclass(tasks.task_class(name), FileDataset)]


def check_batches(task, index: int = 2) -> None:
    """The batch format of ``base.py`` on every split (batch ``index`` of 8), and
    determinism by (seed, split, index)."""
    io = task.io()
    for split in ("train",) + task.eval_splits():
        batch = task.batch(split, index, 8, seed=3)
        assert set(batch) == {"inputs", "targets", "weights"}
        inputs, targets, weights = batch["inputs"], batch["targets"], batch["weights"]
        assert inputs.shape[0] == targets.shape[0] == weights.shape[0] == 8
        assert weights.dtype == np.float32 and weights.sum() > 0
        if io.vocab_size is not None:
            assert inputs.dtype == np.int32 and 0 <= inputs.min() and inputs.max() < io.vocab_size
        else:
            assert inputs.dtype == np.float32 and inputs.shape[-1] == io.input_dim
        if task.loss == "cross_entropy":
            assert targets.dtype == np.int32 and 0 <= targets.min() and targets.max() < io.output_dim
            assert targets.shape == weights.shape
        else:  # per-position regression targets; a frame's pixels may sit between
            assert targets.shape[:weights.ndim] == weights.shape and targets.shape[-1] == io.output_dim
        if io.pooling == "none":
            assert weights.shape == inputs.shape[:2]
        else:
            assert weights.shape == (8,)
        again = task.batch(split, index, 8, seed=3)
        for key in batch:
            np.testing.assert_array_equal(batch[key], again[key])
    other_index, other_seed = task.batch("train", 3, 8, seed=3), task.batch("train", 2, 8, seed=4)
    assert not np.array_equal(other_index["inputs"], task.batch("train", 2, 8, seed=3)["inputs"])
    assert not np.array_equal(other_seed["inputs"], task.batch("train", 2, 8, seed=3)["inputs"])


@pytest.mark.parametrize("name", GENERATED)
def test_batch_format_and_determinism(name):
    _needs(name)
    task = tasks.build_task(name)
    check_batches(task)
    assert 0 < task.chance() < (1 if task.metric == "accuracy" else np.inf)


def test_unknown_option_and_split_are_rejected():
    with pytest.raises(ValueError, match="valid options: seq_len=64, num_pairs=8, vocab_size=64"):
        tasks.build_task("mqar", num_pairz=3)
    with pytest.raises(ValueError, match="valid names"):
        tasks.build_task("mqra")
    with pytest.raises(ValueError, match="valid splits: train, test"):
        tasks.build_task("mqar").batch("valid", 0, 4, 0)


def test_mqar_targets_are_the_bound_values():
    task = tasks.build_task("mqar", seq_len=40, num_pairs=6, vocab_size=31)
    batch = task.batch("train", 0, 16, 0)
    n = task.num_pairs
    for x, y, w in zip(batch["inputs"], batch["targets"], batch["weights"]):
        binding = dict(zip(x[0:2 * n:2], x[1:2 * n:2]))
        assert len(binding) == n                                   # distinct keys
        queries = np.flatnonzero(w)
        assert len(queries) == n and queries.min() >= 2 * n
        assert sorted(x[queries]) == sorted(binding)               # every key asked once
        assert all(y[q] == binding[x[q]] for q in queries)
        assert np.all(x[2 * n:][w[2 * n:] == 0] == 0)              # blanks elsewhere


def test_selective_copy_targets_are_the_data_in_order():
    task = tasks.build_task("selective_copy", seq_len=30, num_tokens=5, num_symbols=6)
    batch = task.batch("train", 1, 16, 0)
    for x, y, w in zip(batch["inputs"], batch["targets"], batch["weights"]):
        data = x[:30][x[:30] != 0]
        np.testing.assert_array_equal(y[w == 1], data)
        assert np.all(x[30:] == task.marker)


def test_copy_memory_recalls_the_opening_symbols():
    task = tasks.build_task("copy_memory", num_tokens=4, delay=10)
    batch = task.batch("test", 0, 8, 0)
    x, y, w = batch["inputs"], batch["targets"], batch["weights"]
    np.testing.assert_array_equal(y[w == 1].reshape(8, 4), x[:, :4])
    assert np.all(x[:, 4:14] == 0) and np.all(x[:, 14] == task.num_symbols + 1)


@pytest.mark.parametrize("group,order", [("parity", 2), ("s3", 6), ("a5", 60)])
def test_group_word_targets_are_prefix_products(group, order):
    task = tasks.build_task("group_word", group=group, length=12, test_lengths=(30,))
    elements = groups.group_elements(group)
    assert len(elements) == order and elements[0] == tuple(range(len(elements[0])))
    assert task.eval_splits() == ("test", "test_L30")
    batch = task.batch("test_L30", 0, 8, 0)
    assert batch["inputs"].shape == (8, 30)
    for x, y in zip(batch["inputs"], batch["targets"]):
        state = elements[0]
        for token, target in zip(x, y):
            state = groups.compose(elements[token], state)
            assert elements[target] == state
    if group == "parity":   # "flip" tokens: the label is the parity of the flips so far
        np.testing.assert_array_equal(batch["targets"], np.cumsum(batch["inputs"], axis=1) % 2)


def test_listops_labels_evaluate_the_expression():
    task = tasks.build_task("listops", max_depth=3, max_length=64)
    batch = task.batch("train", 0, 32, 0)
    for x, y in zip(batch["inputs"], batch["targets"]):
        assert x[-1] == listops.CLOSE and listops.evaluate(x) == y
        body = x[x != listops.PAD]
        assert np.all(x[:len(x) - len(body)] == listops.PAD)      # left padding only
    assert listops.evaluate([listops.operator_token("MED"), 3, 9, 1, 5, listops.CLOSE]) == 2   # digits 2 8 0 4
    assert listops.evaluate([listops.operator_token("SM"), 9, 9, listops.CLOSE]) == 6           # 8 + 8 mod 10


def _centroid(mask):
    ys, xs = np.nonzero(mask)
    return np.array([ys.mean(), xs.mean()])


def test_arrows_label_matches_the_drawn_geometry():
    task = tasks.build_task("arrows", size=16, test_size=20)
    agree = total = 0
    for split, size in (("train", 16), ("test_20px", 20)):
        batch = task.batch(split, 0, 48, 0)
        assert batch["inputs"].shape == (48, size, size, 3)
        assert 0.25 < batch["targets"].mean() < 0.75
        for image, label in zip(batch["inputs"], batch["targets"]):
            shaft, head = _centroid(image[..., 0] > 0), _centroid(image[..., 1] > 0)
            direction = (head - shaft) / np.linalg.norm(head - shaft)
            tip = head + direction
            hit = arrows.ray_hits_disk(tip, direction, _centroid(image[..., 2] > 0), arrows.TARGET_RADIUS + 0.5)
            agree += hit == bool(label)
            total += 1
    assert agree / total >= 0.95


def test_moving_shapes_label_matches_the_motion_and_shape():
    for label in ("direction", "shape", "both"):
        task = tasks.build_task("moving_shapes", frames=5, size=10, label=label)
        batch = task.batch("train", 0, 16, 0)
        video = batch["inputs"][..., 0]
        assert video.shape == (16, 5, 10, 10)
        for clip, y in zip(video, batch["targets"]):
            move = (_centroid(clip[-1] > 0) - _centroid(clip[0] > 0)) / 4
            direction = int(np.flatnonzero((shapes.DIRECTIONS == np.rint(move)).all(axis=1))[0])
            ys, xs = np.nonzero(clip[0])
            crop = clip[0, ys.min():ys.min() + 3, xs.min():xs.min() + 3]
            shape = [i for i, t in enumerate(shapes.SHAPES.values()) if np.array_equal(t, crop)][0]
            expected = {"direction": direction, "shape": shape, "both": 4 * shape + direction}[label]
            assert y == expected


@pytest.mark.parametrize("process", ["sines", "ar"])
def test_forecast_targets_are_the_next_inputs(process):
    task = tasks.build_task("forecast", process=process, seq_len=50)
    batch = task.batch("train", 0, 8, 0)
    np.testing.assert_array_equal(batch["targets"][:, :-1], batch["inputs"][:, 1:])
    assert task.requires_causal
    assert 0.05 < task.chance() < 5.0
    assert np.all(np.isfinite(batch["inputs"])) and np.std(batch["inputs"]) > 0.1


def test_epoch_indices_visit_every_example_once_per_epoch():
    rows = np.concatenate([epoch_indices(10, 4, seed=1, index=i) for i in range(5)])   # 2 epochs
    assert sorted(rows[:10]) == list(range(10)) and sorted(rows[10:]) == list(range(10))
    np.testing.assert_array_equal(epoch_indices(10, 4, 1, 3), rows[12:16])


def test_digits_split_and_padding():
    pytest.importorskip("sklearn")
    task = tasks.build_task("digits")
    x_train, y_train, x_test, y_test = task.arrays()
    assert x_train.shape[1:] == (8, 8, 1) and 0 <= x_train.min() and x_train.max() <= 1
    assert len(x_train) + len(x_test) == 1797 and task.eval_size("test") == len(x_test)
    last = (len(x_test) - 1) // 64
    batch = task.batch("test", last, 64, 0)
    assert batch["weights"].sum() == len(x_test) - 64 * last
    np.testing.assert_array_equal(batch["targets"][batch["weights"] == 1], y_test[64 * last:])
    assert 0.05 < task.chance() < 0.2


def test_ucr_shipped_dataset():
    pytest.importorskip("aeon")
    task = tasks.build_task("ucr", dataset="GunPoint")
    io = task.io()
    assert io.output_dim == 2 and io.input_dim == 1
    batch = task.batch("train", 0, 16, 0)
    assert batch["inputs"].shape == (16, 150, 1)


def test_bouncing_shapes_targets_are_next_frames_and_motion_reflects():
    task = tasks.build_task("bouncing_shapes", frames=40, size=9, num_shapes=1, max_speed=2)
    batch = task.batch("train", 0, 16, 0)
    video, targets, weights = batch["inputs"][..., 0], batch["targets"][..., 0], batch["weights"]
    np.testing.assert_array_equal(targets[:, :-1], video[:, 1:])
    assert np.all(weights[:, :-1] == 1) and np.all(weights[:, -1] == 0)
    for clip in video:
        corners = []
        for frame in clip:
            ys, xs = np.nonzero(frame)
            assert 3 <= len(ys) <= 9 and ys.max() - ys.min() <= 2 and xs.max() - xs.min() <= 2
            corners.append((ys.min(), xs.min()))  # every template fills its top row and left column
        steps = np.abs(np.diff(np.array(corners), axis=0))
        speed = steps.max(axis=0)
        assert np.all(speed >= 1) and np.all(speed <= 2)
        assert np.all((steps == speed) | (steps < speed))   # shortened only where it bounced
    assert task.chance() > 0


def test_bidirectional_recall_queries_on_both_sides_of_the_pairs():
    task = tasks.build_task("bidirectional_recall", seq_len=48, num_pairs=5, vocab_size=23)
    n, k = task.num_pairs, task.num_keys
    batch = task.batch("test", 0, 32, 0)
    before_total = after_total = 0
    split_weights = {s: task.batch(s, 0, 32, 0) for s in ("test_before", "test_after")}
    for row, (x, y, w) in enumerate(zip(batch["inputs"], batch["targets"], batch["weights"])):
        keys = np.flatnonzero((x >= 1) & (x <= k))
        values = np.flatnonzero(x > k)
        assert len(values) == n
        start = values[0] - 1                                       # the block k_1 v_1 … k_n v_n
        np.testing.assert_array_equal(values, start + 1 + 2 * np.arange(n))
        binding = dict(zip(x[start:start + 2 * n:2], x[start + 1:start + 2 * n:2]))
        assert len(binding) == n and n <= start <= len(x) - 3 * n   # distinct keys, room on both sides
        queries = np.flatnonzero(w)
        assert len(queries) == n and not np.any((queries >= start) & (queries < start + 2 * n))
        assert sorted(x[queries]) == sorted(binding)                # every key asked once
        assert all(y[q] == binding[x[q]] for q in queries)
        assert set(keys) == set(queries) | set(range(start, start + 2 * n, 2))   # blanks elsewhere
        before = queries < start
        np.testing.assert_array_equal(np.flatnonzero(split_weights["test_before"]["weights"][row]), queries[before])
        np.testing.assert_array_equal(np.flatnonzero(split_weights["test_after"]["weights"][row]), queries[~before])
        before_total, after_total = before_total + before.sum(), after_total + (~before).sum()
    assert before_total > 0.3 * 32 * n and after_total > 0.3 * 32 * n
    np.testing.assert_array_equal(split_weights["test_before"]["inputs"], batch["inputs"])


def test_fact_recall_answers_are_the_values_of_the_asked_keys():
    task = tasks.build_task("fact_recall", seq_len=40, num_facts=5, num_keys=7, num_values=4)
    n, K, V = task.num_facts, task.num_keys, task.num_values
    assert task.io().vocab_size == 1 + K + K * V and task.io().output_dim == V
    batch = task.batch("train", 0, 16, 0)
    for x, y, w in zip(batch["inputs"], batch["targets"], batch["weights"]):
        facts = x[:-n][x[:-n] != 0]
        assert len(facts) == n and np.all(facts > K)
        key_of, value_of = np.divmod(facts - 1 - K, V)
        binding = dict(zip(key_of.tolist(), value_of.tolist()))
        assert len(binding) == n                                    # distinct keys
        np.testing.assert_array_equal(np.flatnonzero(w), np.arange(len(x) - n, len(x)))
        asked = x[-n:] - 1
        assert sorted(asked.tolist()) == sorted(binding) and np.all(x[-n:] <= K)
        np.testing.assert_array_equal(y[-n:], [binding[k] for k in asked])
