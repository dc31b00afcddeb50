"""File-backed data sets: each loader reads tiny files written in the published format,
draws batches by index (per-process parts included), reports missing or malformed folders in one
message, and every ``configs/paper`` config trains, evaluates and resumes on them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import file_formats as formats
from seqmodels.tasks import build_task
from seqmodels.tasks.files import DatasetFilesError, FileDataset
from seqmodels.tasks.files.images import CIFAR_MEAN, CIFAR_STD, PSMNIST_SEED
from seqmodels.tasks.files.text import BYTE_END, END, LISTOPS_TOKENS


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQMODELS_CACHE", str(tmp_path / "cache"))


def rng():
    return np.random.default_rng(0)


def all_rows(task, split):
    """Every row of an evaluation split as one batch."""
    return task.batch(split, 0, task.eval_size(split), 0)


WRITERS = {
    "cifar10": ({}, formats.write_cifar10), "mnist": ({}, formats.write_mnist),
    "lra_listops": ({"max_length": 16}, lambda d, r: formats.write_lra_listops(d, r, count=10)),
    "lra_text": ({"max_length": 32}, formats.write_lra_text),
    "lra_retrieval": ({"max_length": 16}, lambda d, r: formats.write_lra_retrieval(d, r, count=10)),
    "lra_pathfinder": ({}, lambda d, r: formats.write_lra_pathfinder(d, r, count=40)),
    "speech_commands": ({"stride": 100}, formats.write_speech_commands),
    "moving_mnist": ({"frames": 3}, formats.write_moving_mnist),
    "text_bytes": ({"seq_len": 16, "train_bytes": 3000, "valid_bytes": 600, "test_bytes": 600},
                   formats.write_text_bytes),
    "image_folder": ({"image_size": 8}, lambda d, r: formats.write_image_folder(d, r, per_class=5)),
}


def test_every_file_task_has_a_writer():
    from seqmodels import tasks
    assert sorted(WRITERS) == sorted(n for n in tasks.task_names() if issubclass(tasks.task_class(n), FileDataset))


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_batch_format_and_determinism(name, tmp_path):
    from test_tasks import check_batches
    options, write = WRITERS[name]
    write(tmp_path, rng())
    task = build_task(name, data_dir=str(tmp_path), **options)
    check_batches(task, index=0)                  # the tiny evaluation splits fill one batch
    assert 0 <= task.chance() < (1 if task.metric == "accuracy" else np.inf)


def test_cifar10_decodes_planes_and_holds_out_validation(tmp_path):
    written = formats.write_cifar10(tmp_path, rng(), per_batch=4)
    task = build_task("cifar10", data_dir=str(tmp_path))
    assert task.io().input_dim == 3 and task.io().output_dim == 10
    test = all_rows(task, "test")
    hwc, labels = written["test_batch"]
    np.testing.assert_allclose(test["inputs"], (hwc / 255.0 - CIFAR_MEAN) / CIFAR_STD, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(test["targets"], labels)
    assert task.eval_size("val") == 2 and len(task.rows("train")[1]) == 18          # 10% of 20 held out
    gray = build_task("cifar10", data_dir=str(tmp_path), grayscale=True)
    first = gray.batch("test", 0, 1, 0)["inputs"][0, 5, 7, 0]
    expected = (hwc[0, 5, 7] / 255.0 @ np.array([0.2989, 0.587, 0.114]) - 122.6 / 255) / (61.0 / 255)
    assert gray.batch("test", 0, 1, 0)["inputs"].shape == (1, 32, 32, 1)
    np.testing.assert_allclose(first, expected, rtol=1e-5)


def test_mnist_reads_gzipped_and_plain_idx_and_permutes(tmp_path):
    written = formats.write_mnist(tmp_path, rng(), train=20, test=6, gz=True)
    task = build_task("mnist", data_dir=str(tmp_path))
    test = task.batch("test", 0, 8, 0)
    images, labels = written["t10k"]
    np.testing.assert_allclose(test["inputs"][:6, ..., 0], images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(test["weights"], [1] * 6 + [0] * 2)                 # padded tail
    np.testing.assert_array_equal(test["targets"][:6], labels)
    permuted = build_task("mnist", data_dir=str(tmp_path), permute=True).batch("test", 0, 6, 0)["inputs"]
    order = np.random.RandomState(PSMNIST_SEED).permutation(784)
    np.testing.assert_allclose(permuted[:, :, 0], (images.reshape(6, 784) / 255.0)[:, order], rtol=1e-6)


def test_lra_listops_tokens_and_padding(tmp_path):
    written = formats.write_lra_listops(tmp_path, rng())
    task = build_task("lra_listops", data_dir=str(tmp_path), max_length=16)
    batch = task.batch("val", 0, 6, 0)
    index = {t: i for i, t in enumerate(LISTOPS_TOKENS)}
    source, target = written["val"][0]
    words = source.replace("(", "").replace(")", "").replace("]", "X").split()
    expected = [index[w] for w in words] + [END]
    np.testing.assert_array_equal(batch["inputs"][0, :len(expected)], expected)
    assert (batch["inputs"][0, len(expected):] == 0).all()
    assert batch["targets"][0] == target and task.io().vocab_size == len(LISTOPS_TOKENS)
    short = build_task("lra_listops", data_dir=str(tmp_path), max_length=4).batch("val", 0, 1, 0)["inputs"]
    np.testing.assert_array_equal(short[0], expected[:3] + [END])                      # cut, then the end token


def test_lra_text_bytes_and_labels(tmp_path):
    written = formats.write_lra_text(tmp_path, rng())
    task = build_task("lra_text", data_dir=str(tmp_path), max_length=64)
    batch = task.batch("test", 0, 6, 0)
    text = written[("test", "neg", 0)]                                                # neg sorted first
    expected = [b + 1 for b in text[:63]] + [BYTE_END]
    np.testing.assert_array_equal(batch["inputs"][0, :len(expected)], expected)
    np.testing.assert_array_equal(batch["targets"], [0, 0, 0, 1, 1, 1])
    assert task.eval_splits() == ("test",)


def test_lra_retrieval_pairs(tmp_path):
    written = formats.write_lra_retrieval(tmp_path, rng())
    task = build_task("lra_retrieval", data_dir=str(tmp_path), max_length=32)
    batch = task.batch("test", 0, 6, 0)
    label, _, _, text1, text2 = written["test"][2]
    assert batch["inputs"].shape == (6, 2, 32) and batch["targets"][2] == label
    for doc, text in ((0, text1), (1, text2)):
        expected = [b + 1 for b in text.encode()] + [BYTE_END]
        np.testing.assert_array_equal(batch["inputs"][2, doc, :len(expected)], expected)


def test_lra_pathfinder_reads_metadata_and_pngs(tmp_path):
    written = formats.write_lra_pathfinder(tmp_path, rng(), count=10)
    task = build_task("lra_pathfinder", data_dir=str(tmp_path), resolution=32)
    sizes = {s: len(task.rows(s)[1]) for s in ("train", "val", "test")}
    assert sizes == {"train": 8, "val": 1, "test": 1}
    inputs, labels = task.rows("train")
    rows = task.rows("train")[0].rows
    np.testing.assert_array_equal(np.asarray(labels), written["labels"][rows])
    batch = task.batch("val", 0, 1, 0)
    row = task.rows("val")[0].rows[0]
    np.testing.assert_allclose(batch["inputs"][0, ..., 0], written["images"][row] / 127.5 - 1, atol=1e-6)


def test_speech_commands_splits_by_lists_and_pads(tmp_path):
    clips = formats.write_speech_commands(tmp_path, rng(), per_word=3, length=12000)
    task = build_task("speech_commands", data_dir=str(tmp_path))
    assert {s: task.eval_size(s) if s != "train" else len(task.rows(s)[1]) for s in ("train", "val", "test")} \
        == {"train": 10, "val": 10, "test": 10}
    batch = task.batch("val", 0, 2, 0)
    assert batch["inputs"].shape == (2, 16000, 1)
    np.testing.assert_allclose(batch["inputs"][1, :12000, 0], clips["no/speaker0_nohash_0.wav"] / 32768.0)
    assert (batch["inputs"][1, 12000:] == 0).all() and list(batch["targets"]) == [0, 1]
    half = build_task("speech_commands", data_dir=str(tmp_path), stride=2).batch("val", 0, 2, 0)["inputs"]
    np.testing.assert_array_equal(half, batch["inputs"][:, ::2])


def test_moving_mnist_bounces_real_digits_and_reads_the_test_file(tmp_path):
    written = formats.write_moving_mnist(tmp_path, rng(), videos=4)
    task = build_task("moving_mnist", data_dir=str(tmp_path), frames=30, num_digits=2)
    train = task.batch("train", 3, 2, 5)
    assert train["inputs"].shape == (2, 30, 64, 64, 1)
    np.testing.assert_array_equal(train["targets"][:, :-1], train["inputs"][:, 1:])
    assert (train["weights"][:, -1] == 0).all() and (train["weights"][:, :-1] == 1).all()
    assert train["inputs"].max() <= 1 and train["inputs"].sum(axis=(2, 3, 4)).min() > 0      # digits in every frame
    np.testing.assert_array_equal(train["inputs"], task.batch("train", 3, 2, 5)["inputs"])
    test = task.batch("test", 0, 4, 0)
    np.testing.assert_allclose(test["inputs"][2, :, :, :, 0], written["test"][:, 2] / 255.0)


def test_text_bytes_splits_windows_and_eval_order(tmp_path):
    data = formats.write_text_bytes(tmp_path, rng(), sizes=(3000, 600, 600))
    task = build_task("text_bytes", data_dir=str(tmp_path), seq_len=64, train_bytes=3000, valid_bytes=600,
                      test_bytes=600)
    assert task.eval_size("test") == math.floor(599 / 64)
    test = task.batch("test", 1, 2, 0)
    start = 3600 + 64 * 2
    np.testing.assert_array_equal(test["inputs"][0], np.frombuffer(data[start:start + 64], np.uint8))
    np.testing.assert_array_equal(test["targets"][0], np.frombuffer(data[start + 1:start + 65], np.uint8))
    train = task.batch("train", 7, 4, 1)
    np.testing.assert_array_equal(train["inputs"][:, 1:], train["targets"][:, :-1])
    derived = task.derived_metrics({"val/loss": 2.0, "test/loss": math.log(2), "test/accuracy": 0.5})
    assert derived == {"val/bits_per_byte": pytest.approx(2 / math.log(2)), "test/bits_per_byte": pytest.approx(1.0)}


def test_image_folder_decodes_png_and_jpeg(tmp_path):
    written = formats.write_image_folder(tmp_path, rng())
    task = build_task("image_folder", data_dir=str(tmp_path), image_size=12)
    assert task.io().output_dim == 2 and task.eval_splits() == ("val",)
    batch = task.batch("val", 0, 6, 0)
    assert batch["inputs"].shape == (6, 12, 12, 3)
    np.testing.assert_array_equal(batch["targets"], [0, 0, 0, 1, 1, 1])
    png_same_size = written[("val", "cat", 2)]                                      # 12×12, lossless
    np.testing.assert_allclose(batch["inputs"][2], png_same_size / 255.0, rtol=1e-6)


@pytest.mark.parametrize("name", ["mnist", "text_bytes", "moving_mnist"])
def test_parts_concatenate_to_the_global_batch(name, tmp_path):
    """What each of 4 processes reads (``batch_part``) joins into the global batch."""
    if name == "text_bytes":
        formats.write_text_bytes(tmp_path, rng(), sizes=(400, 100, 100))
        task = build_task(name, data_dir=str(tmp_path), seq_len=8, train_bytes=400, valid_bytes=100, test_bytes=100)
    else:
        (formats.write_mnist if name == "mnist" else formats.write_moving_mnist)(tmp_path, rng())
        task = build_task(name, data_dir=str(tmp_path), **({"frames": 3} if name == "moving_mnist" else {}))
    for split in ("train", "test"):
        whole = task.batch(split, 2, 8, 3)
        parts = [task.batch_part(split, 2, 8, 3, slice(2 * p, 2 * p + 2)) for p in range(4)]
        for key in whole:
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])
    with pytest.raises(ValueError, match="part"):
        task.batch_part("train", 0, 6, 0, slice(4, 2))


def test_cache_is_decoded_once_and_rebuilt_when_files_change(tmp_path, monkeypatch):
    from seqmodels.tasks.files import pipeline
    formats.write_lra_listops(tmp_path / "d", rng())
    task = build_task("lra_listops", data_dir=str(tmp_path / "d"), max_length=16)
    assert task.eval_size("val") == 6
    assert len(list((tmp_path / "cache").glob("lra_listops-*"))) == 1
    assert not list((tmp_path / "cache").glob(".partial-*"))
    decode = type(task).decode
    monkeypatch.setattr(pipeline, "_OPENED", {})                                   # a new process
    monkeypatch.setattr(type(task), "decode", lambda self, folder, writer: pytest.fail("decoded twice"))
    assert task.eval_size("val") == 6                                               # read from the cache
    with open(tmp_path / "d" / "basic_val.tsv", "a") as f:
        f.write("( [MAX 1 2 ] )\t2\n")
    monkeypatch.setattr(pipeline, "_OPENED", {})
    monkeypatch.setattr(type(task), "decode", decode)
    assert task.eval_size("val") == 7                                               # the changed file is decoded
    assert len(list((tmp_path / "cache").glob("lra_listops-*"))) == 2


MALFORMED = {
    "cifar10": lambda d: (d / "cifar-10-batches-py").mkdir(parents=True) or
    [(d / "cifar-10-batches-py" / f).write_bytes(b"not a pickle") for f in
     [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]],
    "mnist": lambda d: d.mkdir() or [(d / f).write_bytes(b"\0\0\x08\x01" + b"\0" * 8) for f in
                                     ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                      "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")],
    "lra_listops": lambda d: d.mkdir() or [(d / f"basic_{s}.tsv").write_text("Input\tOutput\n1\t2\n")
                                           for s in ("train", "val", "test")],
    "speech_commands": lambda d: formats.write_speech_commands(d, rng(), per_word=3) and
    (d / "yes" / "speaker0_nohash_0.wav").write_bytes(b"RIFF0000WAVEjunk"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_missing_and_malformed_folders_raise_one_clear_error(name, tmp_path):
    with pytest.raises(DatasetFilesError, match=f"task '{name}'.*{tmp_path / 'absent'}.*published at"):
        build_task(name, data_dir=str(tmp_path / "absent")).io()
    MALFORMED[name](tmp_path / "bad")
    with pytest.raises(DatasetFilesError, match="expected .*published at") as err:
        build_task(name, data_dir=str(tmp_path / "bad")).io()
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "cache").glob(".partial-*"))                       # no half-written cache left


def test_missing_file_is_named(tmp_path):
    formats.write_mnist(tmp_path, rng())
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetFilesError, match="missing t10k-labels-idx1-ubyte"):
        build_task("mnist", data_dir=str(tmp_path)).io()


# ---------------------------------------------------------------------------------
# every paper config: 2 training steps and an evaluation on tiny files, the model shrunk

PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper"
SHRINK = {"model.d_model": 8, "model.n_layers": 1, "model.mlp_ratio": 1, "train.steps": 2,
          "train.batch_size": 2, "train.log_every": 1, "train.eval_every": 0, "train.checkpoint_every": 0,
          "train.eval_batches": 1, "train.plot": False, "optimizer.warmup_steps": 1}
# per config: (writer, overrides that shrink its data and mixer)
PAPER_CASES = {
    "s4_scifar": (formats.write_cifar10, {"model.mixer_options.state_size": 4}),
    "s4_lra_image": (formats.write_cifar10, {"model.mixer_options.state_size": 4}),
    "s4_lra_listops": (formats.write_lra_listops, {"task.options.max_length": 16, "model.mixer_options.l_max": 16}),
    "s4_lra_text": (formats.write_lra_text, {"task.options.max_length": 32, "model.mixer_options.l_max": 32}),
    "s4_lra_retrieval": (formats.write_lra_retrieval, {"task.options.max_length": 16,
                                                        "model.mixer_options.l_max": 32}),
    "s4_lra_pathfinder": (formats.write_lra_pathfinder, {"model.mixer_options.state_size": 4}),
    "s4_lra_pathx": (formats.write_lra_pathfinder, {"task.options.resolution": 32, "model.mixer_options.l_max": 1024,
                                                    "model.mixer_options.state_size": 4}),
    "s4_speech_commands": (formats.write_speech_commands, {"task.options.subset": "sc10", "task.options.stride": 16,
                                                           "model.mixer_options.l_max": 1000,
                                                           "model.mixer_options.state_size": 4}),
    "s5_lra_listops": (formats.write_lra_listops, {"task.options.max_length": 16}),
    "lssl_psmnist": (formats.write_mnist, {"model.mixer_options.state_size": 4}),
    "convs5_moving_mnist": (formats.write_moving_mnist, {"task.options.frames": 3,
                                                         "model.mixer_options.state_size": 4,
                                                         "model.mixer_options.groups": 4}),
    "routing_enwik8": (lambda d, r: formats.write_text_bytes(d, r, sizes=(400, 100, 100)),
                       {"task.options.seq_len": 16, "task.options.train_bytes": 400, "task.options.valid_bytes": 100,
                        "task.options.test_bytes": 100, "model.mixer_options.window": 8,
                        "model.mixer_options.num_clusters": 2, "model.mixer_options.num_heads": 2,
                        "model.mixer_options.local_heads": 1}),
}


@pytest.fixture
def fast_compile():
    """Cheaper XLA compiles (these tests check plumbing, not numerics)."""
    import jax
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


def shrunk_paper_config(name: str, data: Path, **extra):
    from seqmodels.train import apply_overrides, load_config
    write, overrides = PAPER_CASES[name]
    write(data, rng())
    return apply_overrides(load_config(PAPER / f"{name}.py"),
                           {**SHRINK, **overrides, "task.options.data_dir": str(data), **extra})


def test_every_paper_config_has_a_case():
    assert sorted(PAPER_CASES) == sorted(p.stem for p in PAPER.glob("*.py") if not p.name.startswith("_"))


# CI trains two distinct kinds (images through S4, LRA tokens) and the resume test a
# third (psMNIST through LSSL); the others cost 20-45 s each on a loaded 2-core machine
# and train with SEQMODELS_FULL=1 (every loader's files are still read by the tests above)
LIGHT = ("s4_lra_listops", "s4_scifar")


@pytest.mark.parametrize("name", [n if n in LIGHT else pytest.param(n, marks=pytest.mark.heavy)
                                  for n in sorted(PAPER_CASES)])
def test_paper_config_trains_and_evaluates_on_files(name, tmp_path, fast_compile):
    from conftest import full_size
    from seqmodels.train import train_and_evaluate
    if name not in LIGHT and not full_size():
        pytest.skip("CI trains the configs in LIGHT; SEQMODELS_FULL=1 trains every paper config")
    from seqmodels.train.writers import read_metrics
    config = shrunk_paper_config(name, tmp_path / "data")
    results = train_and_evaluate(config, tmp_path / "run")
    task = build_task(config.task.name, **config.task.options)
    for split in task.eval_splits():
        assert np.isfinite(results[f"{split}/loss"]) and np.isfinite(results[f"{split}/{task.metric}"])
    assert [m["step"] for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if "train/loss" in m] == [1, 2]
    if config.task.name == "text_bytes":
        assert results["test/bits_per_byte"] == pytest.approx(results["test/loss"] / math.log(2))


def test_file_backed_resume_is_bit_identical(tmp_path, fast_compile):
    """Train 4 steps; drop the last checkpoint so the run resumes from step 2; the rerun
    ends with the same parameters and optimizer state, bit for bit."""
    import shutil

    import jax
    from seqmodels.train import load_state, train_and_evaluate
    config = shrunk_paper_config("lssl_psmnist", tmp_path / "data", **{
        "train.steps": 4, "train.checkpoint_every": 2, "train.keep_checkpoints": 3, "model.dropout": 0.1})
    run = tmp_path / "run"
    train_and_evaluate(config, run)
    _, uninterrupted = load_state(config, run)
    shutil.rmtree(run / "checkpoints" / "4")
    train_and_evaluate(config, run)
    step, resumed = load_state(config, run)
    assert step == 4
    def plain(x):
        return jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
    for a, b in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(plain(a)), np.asarray(plain(b)))


def test_cli_reports_a_missing_folder_in_one_line(tmp_path, capsys):
    from seqmodels.train import cli
    code = cli.main(["train", str(PAPER / "s4_scifar.py"), "--workdir", str(tmp_path / "run"),
                     "--task.options.data_dir", str(tmp_path / "nothing")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "cifar-10-batches-py/data_batch_1..5" in err and str(tmp_path / "nothing") in err
