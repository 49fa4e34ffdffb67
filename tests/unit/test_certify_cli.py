"""``python -m rslib certify`` and ``python -m rslib analyze`` (rslib.cli), and the resumable
TSV they write (rslib.certification.certify: certify_images(resume=True), continue_rows,
check_arguments): a model of an architecture rslib does not define, as a TorchScript file,
certified on digits in a real subprocess, killed with SIGKILL and continued; images of your own,
an .npz file and a folder of PNGs, certified like the registered datasets."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from foreign_models import DigitsMLP, train_on_digits
from rslib.certification.certify import certify_images, check_arguments, continue_rows
from rslib.certification.smooth import Smooth
from rslib.certification.tsv import HEADER, read_certificates
from rslib.cli.main import main
from rslib.data.load import load_split
from rslib.data.prepare import prepare_dataset
from rslib.data.registry import DATASETS, IMG_EXTENSIONS
from rslib.models.checkpoint import ModelSpec, load_model, save_model
from rslib.report.metrics import bootstrap_intervals, summarize
from rslib.runtime.errors import CertificateError
from rslib.runtime.io import file_digest

REPO = Path(__file__).resolve().parents[2]
SIGMA = 0.25
#: n and count large enough that the images take seconds (the kill must land in the middle), small
#: enough for a unit test
N, BATCH, COUNT = 20_000, 2_000, 24


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """The prepared digits data folder (embedded: nothing is downloaded)."""
    data = tmp_path_factory.mktemp("data")
    prepare_dataset("digits", data)
    return data


@pytest.fixture(scope="module")
def torchscript_file(digits, tmp_path_factory) -> Path:
    """A DigitsMLP trained for 300 steps under noise, scripted and saved with torch.jit.save."""
    net = train_on_digits(DigitsMLP(), load_split(digits / "digits" / "meta.json", "train"))
    path = tmp_path_factory.mktemp("model") / "mlp.ts"
    torch.jit.save(torch.jit.script(net), str(path))
    return path


def cli(*args: object) -> list[str]:
    """The command line of ``python -m rslib`` with this checkout's rslib."""
    return [sys.executable, "-m", "rslib", *map(str, args)]


def cli_env() -> dict[str, str]:
    # one thread, like the tests' own torch (tests/conftest.py), so the logits are computed in the same order
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}


def certify_args(digits: Path, model: Path, out: Path) -> list[str]:
    return cli("certify", "digits", model, SIGMA, out, "--count", COUNT, "--n", N, "--batch", BATCH,
               "--data-dir", digits, "--device", "cpu")


def rows_without_time(path: Path) -> list[list[str]]:
    """The fields idx label predict radius correct of every row, as written (time varies from run to run)."""
    lines = path.read_text().splitlines()
    assert lines[0] + "\n" == HEADER
    return [line.split("\t")[:5] for line in lines[1:]]


def test_cli_certifies_a_torchscript_model_like_smooth_and_a_killed_run_continues(digits, torchscript_file, tmp_path):
    """The TSV of `python -m rslib certify` on a TorchScript model equals Smooth.certify with the
    same noise seed, row for row; a run killed (SIGKILL) after a few rows and rerun with the same
    arguments gives the same file as the uninterrupted run (every field but the time)."""
    full = tmp_path / "full.tsv"
    done = subprocess.run(certify_args(digits, torchscript_file, full), env=cli_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"certified {COUNT}/{COUNT} images (" in done.stderr and "ETA" in done.stderr

    test_set = load_split(digits / "digits" / "meta.json", "test")
    smooth = Smooth(torch.jit.load(str(torchscript_file)), 10, SIGMA, noise_seed=0, device="cpu")
    expected = []
    for i in range(COUNT):
        x, label = test_set[i]
        prediction, radius = smooth.certify(x, 100, N, 0.001, BATCH, index=i)
        expected.append([str(i), str(label), str(prediction), repr(radius), str(int(prediction == label))])
    assert rows_without_time(full) == expected
    assert sum(row[4] == "1" for row in expected) >= COUNT // 2  # a trained model: mostly certified correct

    killed = tmp_path / "killed.tsv"
    process = subprocess.Popen(certify_args(digits, torchscript_file, killed), env=cli_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while process.poll() is None and (not killed.exists() or killed.read_text().count("\n") < 4):
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    before = killed.read_text().count("\n") - 1
    assert 3 <= before < COUNT
    again = subprocess.run(certify_args(digits, torchscript_file, killed), env=cli_env(), capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"continuing {killed} after its " in again.stderr
    assert rows_without_time(killed) == rows_without_time(full)
    assert json.loads((tmp_path / "killed.tsv.json").read_text())["arguments"]["sigma"] == SIGMA


def test_help_needs_no_torch_and_the_console_scripts_exist():
    """`--help` answers without importing torch; pyproject's console scripts name the CLI's functions."""
    import tomllib

    probe = ("import sys\nfrom rslib.cli.main import main\n"
             "for command in (['--help'], ['certify', '--help'], ['analyze', '--help']):\n"
             "    try:\n        main(command)\n    except SystemExit:\n        pass\n"
             "print('torch imported:', 'torch' in sys.modules, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", probe], env=cli_env(), capture_output=True, text=True, timeout=120)
    assert result.stderr.strip() == "torch imported: False", result.stderr[-2000:]
    assert "SIGMA" in result.stdout and "[0, 1] pixels" in result.stdout and "examples:" in result.stdout
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"rslib": "rslib.cli.main:main", "rslib-certify": "rslib.cli.main:certify_main",
                       "rslib-analyze": "rslib.cli.main:analyze_main"}


def reference_log(path: Path, rows: int = 60) -> Path:
    """A certification log as the reference repositories print it (Cohen et al.'s certify.py:
    radius '{:.3}', time str(timedelta))."""
    rng = np.random.default_rng(3)
    lines = ["idx\tlabel\tpredict\tradius\tcorrect\ttime"]
    for i in range(rows):
        label = int(rng.integers(10))
        outcome = rng.random()
        predict = label if outcome < 0.7 else (-1 if outcome < 0.85 else (label + 3) % 10)
        radius = 0.0 if predict == -1 else float(rng.random() * 1.2)
        lines.append(f"{i * 20}\t{label}\t{predict}\t{radius:.3}\t{int(predict == label)}\t"
                     f"0:00:{int(rng.integers(10, 59))}.{int(rng.integers(0, 999999)):06d}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_analyze_a_reference_log_gives_the_numbers_of_the_tables(tmp_path):
    """`python -m rslib analyze --csv` on a log in the reference format gives exactly the
    certified accuracies and ACR of rslib.report.metrics.summarize on read_certificates (what the
    workflow's tables compute), with their bootstrap intervals."""
    log = reference_log(tmp_path / "sigma_0.25")
    radii = [0.0, 0.25, 0.5, 1.0]
    result = subprocess.run(cli("analyze", log, "--csv", "--radii", *radii), env=cli_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    got = {row["statistic"]: row for row in rows}
    certificates = read_certificates(log)
    expected, intervals = summarize(certificates, radii), bootstrap_intervals([certificates], radii)
    assert got["images"]["value"] == "60"
    assert set(got) == {"images", "acr", "accuracy", "r=0", "r=0.25", "r=0.5", "r=1"}
    for key in set(got) - {"images"}:
        assert float(got[key]["value"]) == expected[key]
        assert (float(got[key]["low"]), float(got[key]["high"])) == intervals[key]
    assert 0 < expected["r=0.5"] < expected["accuracy"] < 1 and expected["acr"] > 0


def test_analyze_prints_a_table_per_file(tmp_path, capsys):
    log = reference_log(tmp_path / "log")
    assert main(["analyze", str(log), str(log), "--radii", "0.5"]) == 0
    text = capsys.readouterr().out
    expected = summarize(read_certificates(log), [0.5])
    low, high = bootstrap_intervals([read_certificates(log)], [0.5])["r=0.5"]
    assert text.count(f"{log}: 60 images\n") == 2
    lines = [line.split() for line in text.splitlines()]
    assert ["ACR", f"{expected['acr']:.3f}"] == lines[2][:2]
    assert ["certified", "at", "r=0.5", f"{100 * expected['r=0.5']:.1f}%", f"[{100 * low:.1f}%,",
            f"{100 * high:.1f}%]"] in lines


def test_analyze_refuses_a_cut_row_with_its_line(tmp_path, capsys):
    log = reference_log(tmp_path / "log", rows=5)
    log.write_text(log.read_text()[:-4])
    assert main(["analyze", str(log)]) == 1
    assert capsys.readouterr().err == (f"error: {log}:6: incomplete row: no newline after field 'time' "
                                       f"({log.read_text().split(chr(9))[-1]!r}), expected every row to end with one "
                                       f"(the file was cut inside this row)\n")


@pytest.mark.parametrize("args, message", [
    (["certify", "my_images/", "m.pt", "0.25", "o.tsv"], "error: DATASET my_images/: no such file or folder"),
    (["certify", "cifar", "m.pt", "0.25", "o.tsv"],
     "error: DATASET 'cifar' is neither a registered dataset (cifar10, cifar100, digits, imagenet, mnist, svhn) nor "
     "an .npz file or a folder"),
    (["certify", "digits", "m.pt", "0.25", "o.tsv", "--image-size", "8"],
     "error: --image-size applies to a folder of images of your own, not to digits"),
    (["certify", "digits", "m.pt", "0.25", "o.tsv", "--mean", "0.3"],
     "error: --mean and --std go together: the input normalisation (x - mean) / std"),
    (["certify", "digits", "m.pt", "0.25", "o.tsv", "--format", "cohen", "--arch", "a.b:c"],
     "error: --arch names the builder of a state dict; format cohen reads its architecture from the file"),
])
def test_bad_certify_arguments_are_one_line(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 1
    assert capsys.readouterr().err == message + "\n"
    assert not (tmp_path / "o.tsv").exists()


def test_a_file_of_unknown_kind_names_the_formats(digits, tmp_path, capsys):
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 3, "state_dict": DigitsMLP().state_dict()}, path)
    assert main(["certify", "digits", str(path), "0.25", str(tmp_path / "o.tsv"), "--data-dir", str(digits),
                 "--count", "2", "--n", "100"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: {path} is not an rslib model file, a TorchScript or a torch.export archive (a dict with keys "
        f"['epoch', 'state_dict']); name its format: cohen, consistency, macer, smoothadv, smoothmix (checkpoints of "
        f"the reference repositories) or state_dict (a state dict, with the function that builds its network)")


def test_a_state_dict_with_its_builder_and_normalisation(digits, tmp_path, capsys):
    """--arch package.module:function and --mean/--std: the rows are those of Smooth on
    Sequential(normalise, the network) with the same seed."""
    meta = digits / "digits" / "meta.json"
    net = train_on_digits(DigitsMLP(), load_split(meta, "train"), steps=100, mean=0.3, std=0.4)
    weights = tmp_path / "weights.pth"
    torch.save(net.state_dict(), weights)
    out = tmp_path / "o.tsv"
    assert main(["certify", "digits", str(weights), "0.25", str(out), "--arch", "foreign_models:digits_mlp",
                 "--mean", "0.3", "--std", "0.4", "--data-dir", str(digits), "--count", "4", "--n", "500",
                 "--device", "cpu"]) == 0
    smooth = Smooth(torch.nn.Sequential(Normalise(0.3, 0.4), net), 10, 0.25, device="cpu")
    test_set = load_split(meta, "test")
    radii = [smooth.certify(test_set[i][0], 100, 500, 0.001, 1000, index=i)[1] for i in range(4)]
    assert read_certificates(out)["radius"].tolist() == radii
    record = json.loads((tmp_path / "o.tsv.json").read_text())["arguments"]
    assert record["format"] == "state_dict" and record["input_layer"] == {"mean": [0.3], "std": [0.4]}


# --- images of your own: an .npz file, a folder of PNGs ---------------------------------------------
@pytest.fixture(scope="module")
def rslib_model_file(digits, tmp_path_factory) -> Path:
    """small_cnn behind digits' normalisation, trained for 100 noisy steps, as an rslib model file
    (which records the dataset digits, and is certified here on images of your own)."""
    info = DATASETS["digits"]
    spec = ModelSpec(arch="small_cnn", dataset="digits", num_classes=10, in_channels=1, mean=info.mean, std=info.std,
                     sigma=SIGMA, method="gaussian", seed=0)
    model = train_on_digits(spec.build(), load_split(digits / "digits" / "meta.json", "train"), steps=100)
    path = tmp_path_factory.mktemp("model") / "cnn.pt"
    save_model(path, model, spec)
    return path


def digits_test_images(digits: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` digits test images (uint8 N x 1 x 8 x 8) and labels."""
    split = load_split(digits / "digits" / "meta.json", "test")
    return split.images[:count].numpy(), split.labels[:count].numpy()


def test_cli_certifies_a_torch_export_archive_recognised_by_its_contents(digits, tmp_path):
    """A .pt2 file (torch.export.save of a network exported in eval mode with a dynamic batch) needs
    no --format: its rows are Smooth.certify's on the same graph with the same noise seed."""
    from rslib.models.checkpoint import load_exported

    net = train_on_digits(DigitsMLP(), load_split(digits / "digits" / "meta.json", "train")).eval()
    path = tmp_path / "mlp.pt2"
    torch.export.save(torch.export.export(net, (torch.rand(2, 1, 8, 8),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)), str(path))
    out = tmp_path / "out.tsv"
    assert main(["certify", "digits", str(path), str(SIGMA), str(out), "--count", "6", "--n", "2000", "--batch", "700",
                 "--data-dir", str(digits), "--device", "cpu"]) == 0
    test_set = load_split(digits / "digits" / "meta.json", "test")
    smooth = Smooth(load_exported(path), 10, SIGMA, noise_seed=0, device="cpu")
    expected = []
    for i in range(6):
        x, label = test_set[i]
        prediction, radius = smooth.certify(x, 100, 2000, 0.001, 700, index=i)
        expected.append([str(i), str(label), str(prediction), repr(radius), str(int(prediction == label))])
    assert rows_without_time(out) == expected


def smooth_rows(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, n: int) -> list[list[str]]:
    """idx label predict radius correct of Smooth.certify on each image (noise seed 0, index = row)."""
    smooth = Smooth(model, 10, SIGMA, noise_seed=0, device="cpu")
    rows = []
    for i, (image, label) in enumerate(zip(images, labels)):
        prediction, radius = smooth.certify(torch.from_numpy(image).float() / 255, 100, n, 0.001, 1000, index=i)
        rows.append([str(i), str(label), str(prediction), repr(radius), str(int(prediction == label))])
    return rows


def test_certify_an_npz_file_of_your_own_like_smooth(digits, rslib_model_file, tmp_path, capsys):
    """An .npz file's images are the test images (all of them: fewer than 500), certified by an rslib
    model file trained on digits exactly as Smooth.certify certifies them; the prepared copy is
    named after the file and its sha256, and a TSV started on the file refuses the changed file."""
    images, labels = digits_test_images(digits, 12)
    d = tmp_path.resolve()
    npz, out, data = d / "my digits.npz", d / "o.tsv", d / "data"
    np.savez(npz, images=images, labels=labels)
    args = ["certify", str(npz), str(rslib_model_file), str(SIGMA), str(out), "--n", "500", "--data-dir", str(data),
            "--device", "cpu"]
    assert main(args) == 0
    expected = smooth_rows(load_model(rslib_model_file)[0], images, labels, 500)
    assert rows_without_time(out) == expected
    assert sum(row[4] == "1" for row in expected) >= 6
    digest = file_digest(npz, "sha256")
    assert json.loads((d / "o.tsv.json").read_text())["arguments"]["dataset"] == f"{npz} sha256:{digest}"
    assert [p.name for p in data.iterdir()] == [f"my_digits-{digest[:12]}"]

    np.savez(npz, images=images[::-1], labels=labels[::-1])
    capsys.readouterr()
    assert main(args) == 1
    changed = file_digest(npz, "sha256")
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: {out} was written with other arguments ({out}.json): dataset '{npz} sha256:{digest}' (now "
        f"'{npz} sha256:{changed}'); rerun with the recorded ones to continue it, or write to another file")
    assert rows_without_time(out) == expected


def write_pngs(folder: Path, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> None:
    """Grey PNGs (Pillow) in ``folder/<classes[label]>/<index>.png``; every class gets its folder."""
    from PIL import Image

    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image[0], "L").save(folder / classes[label] / f"{i:02d}.png")


def test_certify_a_folder_of_pngs_like_smooth(digits, torchscript_file, tmp_path):
    """A folder of class folders (digit0 … digit9, sorted by name; empty ones for digits without an
    image): its PNGs in ImageFolder order, read as grey 8 x 8 (their own size), certified as
    Smooth.certify certifies the same pixels, each labelled by its folder."""
    images, labels = digits_test_images(digits, 12)
    folder, out = tmp_path.resolve() / "pngs", tmp_path / "o.tsv"
    write_pngs(folder, images, labels, [f"digit{c}" for c in range(10)])
    assert main(["certify", str(folder), str(torchscript_file), str(SIGMA), str(out), "--n", "500", "--data-dir",
                 str(tmp_path / "data"), "--device", "cpu"]) == 0
    order = sorted(range(len(labels)), key=lambda i: (labels[i], i))  # class folders by name, then file names
    assert rows_without_time(out) == smooth_rows(torch.jit.load(str(torchscript_file)), images[order], labels[order],
                                                 500)
    dataset = json.loads((tmp_path / "o.tsv.json").read_text())["arguments"]["dataset"]
    assert dataset.startswith(f"{folder} sha256:") and dataset.endswith(" image_size:8")


@pytest.fixture(scope="module")
def untrained_torchscript(tmp_path_factory) -> Path:
    """A DigitsMLP (10 classes) as a TorchScript file, untrained: for the refusals, which come first."""
    path = tmp_path_factory.mktemp("model") / "untrained.ts"
    torch.jit.save(torch.jit.script(DigitsMLP()), str(path))
    return path


def refused_dataset(case: str, d: Path, model: Path) -> tuple[list[str], str]:
    """(DATASET and options, the error line) of each way images of your own are refused."""
    grey = np.zeros((4, 1, 8, 8), np.uint8)
    if case == "array layout":
        np.savez(d / "last.npz", images=grey.transpose(0, 2, 3, 1), labels=np.zeros(4, np.int64))
        return [str(d / "last.npz")], (
            f"DATASET: images in {d}/last.npz have shape (4, 8, 8, 1); expected N x C x H x W with C = 1 or 3 (grey "
            f"or RGB) (channels last: store images.transpose(0, 3, 1, 2))")
    if case == "no labels":
        np.savez(d / "x.npz", images=grey, y=np.zeros(4))
        return [str(d / "x.npz")], (f"DATASET: {d}/x.npz holds no 'labels' array (found ['images', 'y']); expected "
                                    f"images (uint8 N x C x H x W) and labels (integers, length N)")
    if case == "labels beyond the model's classes":
        np.savez(d / "x.npz", images=grey, labels=np.array([0, 3, 12, 5]))
        return [str(d / "x.npz")], f"DATASET {d}/x.npz: labels run up to 12, but MODEL {model} has 10 classes (0 .. 9)"
    if case == "another file":
        (d / "notes.txt").write_text("not images")
        return [str(d / "notes.txt")], (f"DATASET {d}/notes.txt: expected an .npz file (numpy.savez) or a folder, "
                                        f"found another file")
    if case == "image size of an npz":
        np.savez(d / "x.npz", images=grey, labels=np.zeros(4, np.int64))
        return [str(d / "x.npz"), "--image-size", "8"], (
            "--image-size applies to a folder of images; the images of an .npz file are certified as they are")
    if case == "input layer normalize":
        np.savez(d / "x.npz", images=grey, labels=np.zeros(4, np.int64))
        return [str(d / "x.npz"), "--input-layer", "normalize"], (
            f"{model}: input layer normalize takes the dataset's mean and std, and x-"
            f"{file_digest(d / 'x.npz', 'sha256')[:12]} has none (images of your own to certify): give the network's "
            f"own mean and std (rslib certify --mean --std)")
    if case == "empty folder":
        (d / "empty").mkdir()
        return [str(d / "empty")], f"DATASET: {d}/empty has no class folders (one sub-folder per class)"
    if case == "class folders without images":
        (d / "hollow" / "a").mkdir(parents=True)
        (d / "hollow" / "b").mkdir()
        return [str(d / "hollow")], (f"DATASET: {d}/hollow holds no image ({', '.join(IMG_EXTENSIONS)}) in its class "
                                     f"folders (a, b)")
    if case == "class folders other than the model's classes":
        write_pngs(d / "three", grey, np.array([0, 1, 2, 0]), ["a", "b", "c"])
        return [str(d / "three")], (
            f"DATASET {d}/three: 3 class folders, but MODEL {model} has 10 classes; give one folder per class, in the "
            f"model's class order by name (an empty one for a class without images)")
    if case == "a tree of splits":
        write_pngs(d / "tree" / "train", grey, np.zeros(4, np.int64), ["a"])
        write_pngs(d / "tree" / "test", grey, np.zeros(4, np.int64), ["a"])
        return [str(d / "tree")], (f"DATASET: {d}/tree holds train/ and test/, a tree of splits; give the folder of "
                                   f"the images to certify, one sub-folder per class (e.g. {d}/tree/test)")
    if case == "images of several sizes":
        from PIL import Image

        write_pngs(d / "sizes", grey, np.zeros(4, np.int64), ["a"])
        Image.new("L", (10, 12)).save(d / "sizes" / "a" / "big.png")
        return [str(d / "sizes")], (f"DATASET: the images of {d}/sizes are not all square and of one size (8x8, "
                                    f"10x12); give --image-size, the side they are resized and centre-cropped to")
    raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "array layout", "no labels", "labels beyond the model's classes", "another file", "image size of an npz",
    "input layer normalize", "empty folder", "class folders without images",
    "class folders other than the model's classes", "a tree of splits", "images of several sizes"])
def test_images_of_your_own_refused_in_one_line(case, untrained_torchscript, tmp_path, capsys):
    """Each refusal is its one line, before anything is prepared or written."""
    d = tmp_path.resolve()
    dataset, message = refused_dataset(case, d, untrained_torchscript)
    out = d / "o.tsv"
    assert main(["certify", dataset[0], str(untrained_torchscript), "0.25", str(out), *dataset[1:], "--data-dir",
                 str(d / "data"), "--device", "cpu"]) == 1
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not out.exists() and not (d / "o.tsv.json").exists() and not (d / "data").exists()


class Normalise(torch.nn.Module):
    def __init__(self, mean: float, std: float):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x):
        return (x - self.mean) / self.std


# --- the resumable TSV -----------------------------------------------------------------------------
class Constant(torch.nn.Module):
    """Logits that favour class ``image index mod 3`` by a wide margin (read from the first pixel)."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(10.0))

    def forward(self, x):
        return self.scale * torch.nn.functional.one_hot((x[:, 0, 0, 0].round() % 3).long(), 3).float()


def constant_dataset():
    return {i: (torch.full((1, 2, 2), float(i)), i % 3) for i in range(10)}


def test_resume_removes_a_cut_row_and_appends_after_the_last_complete_one(tmp_path):
    smooth = Smooth(Constant(), 3, 0.1, device="cpu", pixel_range=None)
    out, whole = tmp_path / "out.tsv", tmp_path / "whole.tsv"
    certify_images(smooth, constant_dataset(), range(10), whole, n0=100, n=200, alpha=0.001, batch_size=100)
    rows = whole.read_text().splitlines(keepends=True)
    out.write_text("".join(rows[:4]) + rows[4][:7])  # header, 3 rows, a row cut in the middle
    lines = []
    certify_images(smooth, constant_dataset(), range(10), out, n0=100, n=200, alpha=0.001, batch_size=100,
                   resume=True, log=lines.append, log_every=1)
    assert lines[0] == f"continuing {out} after its 3 complete rows"
    assert lines[1].startswith("certified 4/10 images (") and lines[-1].startswith("certified 10/10 images (")
    assert [r.split("\t")[:5] for r in out.read_text().splitlines()] == [r.split("\t")[:5] for r in rows]
    certify_images(smooth, constant_dataset(), range(10), out, n0=100, n=200, alpha=0.001, batch_size=100,
                   resume=True, log=lines.append)
    assert lines[-1] == f"{out} already holds all 10 images"


def test_resume_refuses_rows_of_other_images(tmp_path):
    out = tmp_path / "out.tsv"
    out.write_text(HEADER + "0\t0\t0\t0.5\t1\t1.0\n" + "2\t2\t2\t0.5\t1\t1.0\n")
    with pytest.raises(CertificateError, match=rf"^{out}:3 has image 2 where the evaluation subset has image 1: "
                                               r"the file was written for other images; write to another file$"):
        continue_rows(out, range(10), classes=3)
    with pytest.raises(CertificateError, match=rf"^{out} holds 2 rows, more than the 1 images to certify$"):
        continue_rows(out, [0], classes=3)
    assert continue_rows(tmp_path / "new.tsv", [0]) == 0 and (tmp_path / "new.tsv").read_text() == HEADER


def test_arguments_record_refuses_other_arguments_except_those_that_may_change(tmp_path):
    out = tmp_path / "out.tsv"
    check_arguments(out, {"sigma": 0.25, "n": 100, "count": 5}, may_change=("count",))
    out.write_text(HEADER + "0\t0\t0\t0.5\t1\t1.0\n")
    check_arguments(out, {"sigma": 0.25, "n": 100, "count": 9}, may_change=("count",))
    assert json.loads((tmp_path / "out.tsv.json").read_text())["arguments"]["count"] == 9
    with pytest.raises(CertificateError, match=(
            rf"^{out} was written with other arguments \({out}.json\): n 100 \(now 1000\); sigma 0.25 \(now 0.5\); "
            r"rerun with the recorded ones to continue it, or write to another file$")):
        check_arguments(out, {"sigma": 0.5, "n": 1000, "count": 9}, may_change=("count",))
    (tmp_path / "out.tsv.json").unlink()
    with pytest.raises(CertificateError, match=rf"^{out} exists, but {out}.json does not say which arguments it "
                                               r"was written with: move it away, or write to another file$"):
        check_arguments(out, {"sigma": 0.25})
