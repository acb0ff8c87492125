"""The MLMT branch: image-level labels, the objective's pieces, the output files, the
labeled split shared with the segmenter, evaluate.py --with-mlmt end to end, exact resume."""
import json
import os
import shutil
import signal

import numpy as np
import pytest

import torch
import torchvision
from PIL import Image

import evaluate
import train_full
import train_mlmt
from methods.mlmt.labels import ClassifierImages, ImageLabels, normalize_images
from data.splits import save_permutation
from engine import options, setup
from engine.config import segmentation_config
from methods.mlmt.config import MLMTConfig
from methods.mlmt import data as mlmt_data, networks as mlmt_networks, validation as mlmt_validation
from methods.mlmt import objective as mlmt
from methods.mlmt.objective import MLMTStep
from tests.helpers import assert_identical, crash_at, expect_error, run_main, tiny_eval_flags, tiny_train_flags
from tests.voc_fixture import make_voc, write_label
from utils.distributed import Env
from utils.errors import UserError

TRAIN_SIZES = ((60, 80), (75, 50), (48, 64), (90, 70), (64, 64), (50, 90), (70, 60), (56, 72), (80, 48), (66, 66))
EPOCHS, ITERS_PER_EPOCH = 2, 3  # 5 labeled images in batches of 2 (the unlabeled: 3 + 2, so they run out mid-epoch)
CPU = Env(torch.device("cpu"))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tiny networks run faster on one thread, and much faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    """10 training and 3 validation images in the VOC layout (its own copy: label caches go there)."""
    return make_voc(str(tmp_path_factory.mktemp("mlmt_voc")), sizes_train=TRAIN_SIZES)


def split_file(folder):
    path = os.path.join(folder, "split.pkl")
    save_permutation(path, np.random.default_rng(3).permutation(len(TRAIN_SIZES)))
    return path


def mlmt_flags(voc, out, *extra, pkl="none"):
    return ["--data-dir", voc, "--data-list", os.path.join(voc, "lists/train_aug.txt"),
            "--val-list", os.path.join(voc, "lists/val.txt"), "--backbone", "resnet18", "--pretrained", "none",
            "--image-size", "33", "--batch-size-lab", "2", "--batch-size-unlab", "3", "--batch-size-val", "2",
            "--labeled-ratio", "0.5", "--num-epochs", str(EPOCHS), "--burn-in-epochs", "0",
            "--evaluation-epochs", "1", "--pkl-file", pkl, "--num-workers", "0", "--log-every", "1",
            "--output-dir", str(out), *extra]


def output_files(out):
    return {name: open(os.path.join(out, name), "rb").read() for name in sorted(os.listdir(out))
            if name.startswith("output_")}


def final_state(out):
    state = torch.load(os.path.join(out, "latest.pth"), weights_only=True)
    return {k: state[k] for k in ("model", "modules", "optimizers", "extras", "streams", "iteration")}


@pytest.fixture(scope="module")
def reference(voc, module_tmp):
    """An uninterrupted 2-epoch run (ResNet-18, 40x40 images, evaluation every epoch)."""
    out = module_tmp("reference")
    code, _, _ = run_main(train_mlmt.main, mlmt_flags(voc, out))
    assert code == 0
    return out


# --- image-level labels ---------------------------------------------------------------------------

def hand_made_voc(root):
    """Three images whose classes are known by construction (one palette PNG, 255 borders)."""
    os.makedirs(os.path.join(root, "JPEGImages"))
    os.makedirs(os.path.join(root, "SegmentationClassAug"))
    labels = {"a": np.zeros((20, 30), np.uint8), "b": np.full((20, 30), 15, np.uint8), "c": np.zeros((20, 30), np.uint8)}
    labels["a"][2:8, 2:8] = 255
    labels["a"][3:7, 3:7] = 12            # dog inside a void border
    labels["b"][:, :5] = 255              # no background pixel at all: person and void only
    labels["c"][10:, :] = 7               # car
    labels["c"][0, 0] = 20                # a single tvmonitor pixel
    for k, (name, label) in enumerate(labels.items()):
        Image.new("RGB", (30, 20), (50 * k, 0, 0)).save(os.path.join(root, "JPEGImages", name + ".jpg"))
        write_label(os.path.join(root, "SegmentationClassAug", name + ".png"), label, palette=name == "c")
    with open(os.path.join(root, "train.txt"), "w") as f:
        f.write("a\nb\nc\n")
    expected = np.zeros((3, 21), np.uint8)
    expected[:, 0] = 1                   # VOC: background present in every image (b has none)
    expected[0, 12] = expected[1, 15] = expected[2, 7] = expected[2, 20] = 1
    return expected


def test_labels_derived_from_pngs_are_the_hand_made_ones_and_cached(tmp_path, monkeypatch):
    expected = hand_made_voc(str(tmp_path))
    args = train_mlmt.parse_args(["--data-dir", str(tmp_path), "--data-list", str(tmp_path / "train.txt"),
                                  "--num-workers", "0"])
    split = mlmt_data.load_split(MLMTConfig.from_flags(args), CPU, "train", say=lambda *_: None)
    assert split.ids == ["a", "b", "c"] and np.array_equal(split.labels, expected)
    cache = tmp_path / "train.mlmt-labels.npz"
    assert cache.is_file()
    # the second time the cache answers: reading a PNG would fail
    import methods.mlmt.labels as multilabel
    monkeypatch.setattr(multilabel, "_presence", lambda *a: (_ for _ in ()).throw(AssertionError("PNG read")))
    assert np.array_equal(mlmt_data.load_split(MLMTConfig.from_flags(args), CPU, "train", say=lambda *_: None).labels, expected)
    monkeypatch.undo()
    # a changed label file invalidates it
    label = np.zeros((20, 30), np.uint8)
    label[5, 5] = 3
    write_label(str(tmp_path / "SegmentationClassAug" / "b.png"), label)
    os.utime(tmp_path / "SegmentationClassAug" / "b.png", ns=(1, 1))
    expected[1] = 0
    expected[1, [0, 3]] = 1
    assert np.array_equal(mlmt_data.load_split(MLMTConfig.from_flags(args), CPU, "train", say=lambda *_: None).labels, expected)
    # targets in the classifier's unit order: background last
    targets = ClassifierImages(split, "labeled", 33)[(0, (0, 0, 0, 0))][1]
    assert targets.dtype == np.float32 and targets[20] == 1 and targets[11] == 1 and targets.sum() == 2


def test_label_values_outside_the_classes_name_the_file(tmp_path):
    hand_made_voc(str(tmp_path))
    write_label(str(tmp_path / "SegmentationClassAug" / "c.png"), np.full((20, 30), 30, np.uint8))
    args = train_mlmt.parse_args(["--data-dir", str(tmp_path), "--data-list", str(tmp_path / "train.txt"),
                                  "--num-workers", "0"])
    with pytest.raises(Exception, match="c.png.*30"):
        mlmt_data.load_split(MLMTConfig.from_flags(args), CPU, "train", say=lambda *_: None)


def write_original_layout(voc, root):
    """The original's layout made from the VOC fixture, its label rows computed here by hand."""
    for split, list_name in (("train", "train_aug"), ("val", "val")):
        os.makedirs(os.path.join(root, split))
        ids = open(os.path.join(voc, "lists", f"{list_name}.txt")).read().split()
        rows = []
        for name in ids:
            shutil.copy(os.path.join(voc, "JPEGImages", name + ".jpg"), os.path.join(root, split, name + ".jpg"))
            values = set(np.unique(np.array(Image.open(os.path.join(voc, "SegmentationClassAug", name + ".png")))).tolist())
            rows.append([int(c in values) for c in range(1, 21)] + [1])  # foreground, then background
        with open(os.path.join(root, f"{split}_img.txt"), "w") as f:
            f.writelines(name + ".jpg\n" for name in ids)
        with open(os.path.join(root, f"{split}_label.txt"), "w") as f:
            f.writelines(" ".join(map(str, row)) + "\n" for row in rows)
    return root


def test_the_original_layout_reads_to_the_same_labels(voc, tmp_path):
    root = write_original_layout(voc, str(tmp_path / "orig"))
    args = train_mlmt.parse_args(["--data-dir", root])
    assert args.data_layout == "original"
    derived_args = train_mlmt.parse_args(mlmt_flags(voc, tmp_path / "o"))
    assert derived_args.data_layout == "dataset"
    for split in ("train", "val"):
        original = mlmt_data.load_split(MLMTConfig.from_flags(args), CPU, split)
        derived = mlmt_data.load_split(MLMTConfig.from_flags(derived_args), CPU, split, say=lambda *_: None)
        assert original.ids == derived.ids and np.array_equal(original.labels, derived.labels)
        assert original.image_paths[0] == os.path.join(root, split, original.ids[0] + ".jpg")


def test_original_layout_mismatches_name_the_file_and_line(voc, tmp_path, capsys):
    root = write_original_layout(voc, str(tmp_path / "orig"))
    label_file = os.path.join(root, "train_label.txt")
    rows = open(label_file).read().splitlines()
    open(label_file, "w").write("\n".join(rows[:-1]) + "\n")
    expect_error(train_mlmt.main, ["--data-dir", root, "--output-dir", str(tmp_path / "o")], capsys,
                 "train_label.txt has 9 rows", "train_img.txt lists 10 images")
    rows[3] = "0 1 1"
    open(label_file, "w").write("\n".join(rows) + "\n")
    expect_error(train_mlmt.main, ["--data-dir", root, "--output-dir", str(tmp_path / "o")], capsys,
                 "train_label.txt line 4 has 3 values, expected 21")


# --- the objective's pieces ------------------------------------------------------------------------

def test_views_are_bytes_normalised_on_the_device_exactly_as_totensor_normalize(tmp_path):
    """The loaders ship uint8 views; normalize_images gives the original's ToTensor + Normalize input
    bit for bit (resize to a square, bilinear, then the view's own transforms)."""
    rng = np.random.default_rng(0)
    path = str(tmp_path / "x.jpg")
    Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(path)
    split = ImageLabels(["x"], [path], np.zeros((1, 21), np.uint8), "test")
    resized = Image.open(path).convert("RGB").resize((33, 33), Image.BILINEAR)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = torchvision.transforms.functional.normalize(torchvision.transforms.functional.to_tensor(resized), mean, std)
    view = ClassifierImages(split, "val", 33)[0][0]
    assert view.dtype == np.uint8 and view.shape == (3, 33, 33)
    assert torch.equal(normalize_images(torch.from_numpy(view)[None])[0], expected)
    plain, augmented, _ = ClassifierImages(split, "unlabeled", 33)[(0, (1, 2, 3, 4))]
    assert plain.dtype == augmented.dtype == np.uint8 and not np.array_equal(plain, augmented)
    assert np.array_equal(plain, view) or np.array_equal(plain, view[:, :, ::-1])  # plain: resize, maybe flip


def test_ema_update_at_given_steps():
    assert mlmt.ema_alpha(1, 0.999) == 0.5 and mlmt.ema_alpha(9, 0.999) == pytest.approx(0.9)
    assert mlmt.ema_alpha(999, 0.999) == pytest.approx(0.999) and mlmt.ema_alpha(5000, 0.999) == 0.999
    student, teacher = torch.nn.BatchNorm1d(2), torch.nn.BatchNorm1d(2)
    with torch.no_grad():
        student.weight.fill_(3.0)
        student.running_mean.fill_(7.0)
        teacher.weight.fill_(1.0)
    mlmt.update_ema(teacher, student, mlmt.ema_alpha(1, 0.999))           # 0.5 * 1 + 0.5 * 3
    assert torch.equal(teacher.weight, torch.full((2,), 2.0))
    mlmt.update_ema(teacher, student, mlmt.ema_alpha(3, 0.999))           # 0.75 * 2 + 0.25 * 3
    assert torch.equal(teacher.weight, torch.full((2,), 2.25))
    assert torch.equal(teacher.running_mean, torch.zeros(2))              # buffers are not averaged
    assert torch.equal(teacher.bias, torch.zeros(2))


def test_consistency_weight_at_given_epochs():
    weight = [mlmt.consistency_weight(e, 10, 100, 1.0) for e in (0, 5, 10, 11, 12, 35, 59, 60, 99)]
    assert weight[:3] == [0.0, 0.0, 0.0]
    assert weight[3:] == pytest.approx([0.02, 0.04, 0.5, 0.98, 1.0, 1.0])
    assert mlmt.consistency_weight(80, 10, 100, 0.3) == pytest.approx(0.3)


def test_cosine_consistency_and_recall_accuracy_and_average_precision():
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    t = torch.tensor([[0.0, 2.0], [3.0, 3.0]])
    assert float(mlmt.cosine_consistency(s, t)) == pytest.approx(0.5)  # (1 - 0 + 1 - 1) / 2
    probs = torch.tensor([[0.9, 0.2, 0.6], [0.4, 0.7, 0.1]])
    targets = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    mean, neg, pos = mlmt.recall_accuracy(probs, targets)               # 2 of 3 positives, 2 of 3 negatives
    assert (pos, neg) == pytest.approx((200 / 3, 200 / 3)) and mean == pytest.approx(200 / 3)
    scores = np.array([[0.9, 0.5], [0.8, 0.5], [0.7, 0.5], [0.6, 0.1]])
    labels = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])
    ap = mlmt_validation.average_precision(scores, labels)
    assert ap[0] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)                # hits at ranks 1 and 3
    assert ap[1] == pytest.approx(1 / 3)                                # a three-way tie holds the only hit
    assert np.isnan(mlmt_validation.average_precision(scores, np.zeros((4, 2)))).all()


def test_row_shift_switch_on_a_3x4_table():
    table = np.arange(12, dtype=np.float64).reshape(3, 4)               # last column = background
    flat = mlmt_validation.reorder_output(table, "flat", batch_size=32)
    assert flat.tolist() == [[11, 0, 1, 2], [3, 4, 5, 6], [7, 8, 9, 10]]  # rows get the previous row's bg
    assert mlmt_validation.reorder_output(table, "per-row", 32).tolist() == [[3, 0, 1, 2], [7, 4, 5, 6], [11, 8, 9, 10]]
    # the original rolled each validation batch on its own
    assert mlmt_validation.reorder_output(table, "flat", 2).tolist() == [[7, 0, 1, 2], [3, 4, 5, 6], [11, 8, 9, 10]]
    assert train_mlmt.parse_args([]).output_roll == "flat"
    assert train_mlmt.parse_args(["--fidelity", "fixed"]).output_roll == "per-row"
    assert train_mlmt.parse_args(["--fidelity", "fixed", "--output-roll", "flat"]).output_roll == "flat"


def test_output_files_are_replaced_not_appended(tmp_path):
    for value in (0.25, 0.75):
        mlmt_validation.write_outputs(str(tmp_path), "ema", 5, np.full((3, 4), value))
    lines = (tmp_path / "output_ema_raw_5.txt").read_text().splitlines()
    assert lines == ["0.750000 0.750000 0.750000 0.750000"] * 3
    assert (tmp_path / "output_ema_bin_5.txt").read_text().splitlines() == ["1 1 1 1"] * 3
    assert sorted(os.listdir(tmp_path)) == ["output_ema_bin_5.txt", "output_ema_raw_5.txt"]


def test_the_step_in_the_papers_order():
    """BCE on the labeled batch + w * cosine(student(augmented), teacher(plain)), then the EMA."""
    torch.manual_seed(0)
    net = lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))  # noqa: E731
    student, teacher = net(), net()
    teacher.requires_grad_(False)
    before_teacher = teacher[1].weight.clone()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    from utils.amp import Precision
    step = MLMTStep(student, teacher, optimizer, Precision("off", torch.device("cpu")), num_epochs=100,
                    burn_in_epochs=10, w_cons=1.0, ema_decay=0.999, device=torch.device("cpu"))
    views = lambda n: torch.randint(0, 256, (n, 3, 2, 2), dtype=torch.uint8)  # noqa: E731  (as the loaders give)
    x, y = views(2), torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    plain, augmented = views(3), views(3)
    with torch.no_grad():
        expected_class = float(torch.nn.BCELoss()(torch.sigmoid(student(normalize_images(x))), y))
        expected_cons = float(torch.nn.CosineEmbeddingLoss()(student(normalize_images(augmented)),
                                                             teacher(normalize_images(plain)), torch.ones(3)))
    student_before = student[1].weight.detach().clone()
    values = step(0, 35, (x, y, None), (plain, augmented, None))
    assert values["loss_class"] == pytest.approx(expected_class) and values["loss_cons"] == pytest.approx(expected_cons)
    assert values["w_cons"] == pytest.approx(0.5) and values["loss"] == pytest.approx(expected_class + 0.5 * expected_cons)
    assert not torch.equal(student[1].weight, student_before)
    assert torch.allclose(teacher[1].weight, 0.5 * before_teacher + 0.5 * student[1].weight)  # alpha(1) = 0.5


# --- flags, split, bad input -----------------------------------------------------------------------

def test_original_flags_and_defaults():
    args = train_mlmt.parse_args([])
    assert (args.lr, args.eta_min, args.weight_decay, args.num_classes) == (3e-2, 1e-4, 1e-5, 21)
    assert args.num_workers == options.default_num_workers()  # the project's: the original's 4, fewer on small machines
    assert (args.batch_size_lab, args.batch_size_unlab, args.batch_size_val) == (16, 80, 32)
    assert (args.num_epochs, args.burn_in_epochs, args.evaluation_epochs) == (100, 10, 5)
    assert (args.exp_name, args.cons_loss, args.w_cons, args.ema_decay, args.labeled_ratio) == \
        ("default", "cosine", 1.0, 0.999, 0.125)
    assert args.data_dir == "./data/voc_dataset/" and args.pkl_file == "./checkpoints/voc_semi_0_125/train_voc_split.pkl"
    assert args.output_dir == os.path.join("./mlmt_output", "default") and args.backbone == "resnet101"
    assert args.pretrained.endswith("pretrained_models/resnet101-5d3b4d8f.pth")
    assert train_mlmt.parse_args(["--workers", "7"]).num_workers == 7
    readme = train_mlmt.parse_args(["--batch-size-lab", "16", "--batch-size-unlab", "80", "--labeled-ratio", "0.125",
                                    "--exp-name", "voc_semi_0_125_MLMT", "--pkl-file",
                                    "./checkpoints/voc_semi_0_125/train_voc_split.pkl"])
    assert readme.output_dir == os.path.join("./mlmt_output", "voc_semi_0_125_MLMT")
    assert "only cosine exists" in train_mlmt.get_args_parser().format_help().replace("\n", " ").replace("  ", " ")


def test_the_same_labeled_images_as_the_segmentation_trainer(voc, tmp_path):
    import train_s4GAN
    pkl = split_file(str(tmp_path))
    seg_args = train_s4GAN.parse_args(tiny_train_flags(voc, tmp_path / "seg", "--labeled-ratio", "0.34",
                                                       "--split-id", pkl))
    os.makedirs(seg_args.checkpoint_dir)
    seg = segmentation_config(seg_args)
    dataset, n = setup.make_train_dataset(seg.data)
    perm = setup.make_split(seg.split, seg_args.random_seed, n)
    save_permutation(os.path.join(seg_args.checkpoint_dir, "train_voc_split.pkl"), perm)
    seg_pool = setup.make_streams(seg.split, CPU, dataset, perm, {"labeled": "labeled"}, n, seg_args.random_seed,
                                  seg_args.num_workers)["labeled"].sampler.indices
    args = train_mlmt.parse_args(mlmt_flags(voc, tmp_path / "m", "--labeled-ratio", "0.34",
                                            pkl=str(tmp_path / "seg" / "train_voc_split.pkl")))
    labels, _, streams = mlmt_data.make_data(MLMTConfig.from_flags(args), CPU, say=lambda *_: None)
    pool = streams["labeled"].sampler.indices
    assert len(pool) == 3 and [dataset.ids[k] for k in seg_pool] == [labels.ids[k] for k in pool]
    assert set(streams["unlabeled"].sampler.indices) == set(range(10)) - set(pool)


def test_the_readme_command_reads_the_segmentation_layout(voc, tmp_path, monkeypatch):
    """The original README's flags, verbatim, in a folder laid out as the segmentation scripts read it."""
    os.makedirs(tmp_path / "data" / "voc_list")
    os.symlink(voc, tmp_path / "data" / "voc_dataset")
    for name in ("train_aug.txt", "val.txt"):
        shutil.copy(os.path.join(voc, "lists", name), tmp_path / "data" / "voc_list" / name)
    os.makedirs(tmp_path / "checkpoints" / "voc_semi_0_125")
    split_file(str(tmp_path / "checkpoints" / "voc_semi_0_125"))
    os.rename(tmp_path / "checkpoints" / "voc_semi_0_125" / "split.pkl",
              tmp_path / "checkpoints" / "voc_semi_0_125" / "train_voc_split.pkl")
    monkeypatch.chdir(tmp_path)
    args = train_mlmt.parse_args(["--batch-size-lab", "16", "--batch-size-unlab", "80", "--labeled-ratio", "0.125",
                                  "--exp-name", "voc_semi_0_125_MLMT", "--pkl-file",
                                  "./checkpoints/voc_semi_0_125/train_voc_split.pkl", "--num-workers", "0"])
    train, perm, streams = mlmt_data.make_data(MLMTConfig.from_flags(args), CPU, say=lambda *_: None)
    assert args.data_layout == "dataset" and len(train) == 10 and len(streams["labeled"].sampler.indices) == 1
    assert streams["labeled"].sampler.indices.tolist() == perm[:1].tolist()
    assert os.path.isfile(tmp_path / "data" / "voc_list" / "train_aug.mlmt-labels.npz")
    assert len(mlmt_validation.MLMTValidator(MLMTConfig.from_flags(args), CPU, None, say=lambda *_: None).split) == 3


def test_missing_pkl_file_says_where_it_comes_from(voc, tmp_path, capsys):
    argv = mlmt_flags(voc, tmp_path / "o", pkl=str(tmp_path / "nope.pkl"))
    expect_error(train_mlmt.main, argv, capsys, "--pkl-file", "nope.pkl", "train_s4GAN.py writes it", "splits/")


def test_classes_without_a_labeled_positive_are_named(voc, tmp_path, capsys):
    args = train_mlmt.parse_args(mlmt_flags(voc, tmp_path / "o", "--labeled-ratio", "0.1"))
    mlmt_data.make_data(MLMTConfig.from_flags(args), CPU, say=lambda *_: None)
    err = capsys.readouterr().err
    assert "warning: no labeled image contains" in err and "'aeroplane'" in err


def test_pretrained_weights_absent_matching_or_not(tmp_path, capsys):
    args = train_mlmt.parse_args(["--backbone", "resnet18", "--pretrained", str(tmp_path / "absent.pth")])
    with pytest.raises(UserError, match="absent.pth does not exist: download https://download.pytorch.org/models/"
                                        "resnet18-5c106cde.pth there .* or pass --pretrained none"):
        mlmt_networks.imagenet_trunk(MLMTConfig.from_flags(args))
    imagenet = torchvision.models.resnet18(weights=None).state_dict()   # the 1000-way file's keys and shapes
    torch.save(imagenet, tmp_path / "r18.pth")
    args.pretrained = str(tmp_path / "r18.pth")
    trunk = mlmt_networks.imagenet_trunk(MLMTConfig.from_flags(args))
    model = mlmt_networks.classifier(MLMTConfig.from_flags(args), torch.device("cpu"), trunk)
    assert torch.equal(model.conv1.weight, imagenet["conv1.weight"]) and model.fc.out_features == 21
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    args.pretrained = str(tmp_path / "r34.pth")
    with pytest.raises(Exception, match="is not the ImageNet resnet18"):
        mlmt_networks.imagenet_trunk(MLMTConfig.from_flags(args))


def test_pascal_context_labels_and_cityscapes_refused(tmp_path, capsys):
    from tests.context_fixture import make_context_layout
    masks = make_context_layout(str(tmp_path / "pc"))
    args = train_mlmt.parse_args(["--dataset", "pascal_context", "--data-dir", str(tmp_path / "pc"), "--num-workers", "0"])
    assert args.num_classes == 60 and args.data_layout == "dataset"
    split = mlmt_data.load_split(MLMTConfig.from_flags(args), CPU, "val", say=lambda *_: None)
    for row, name in zip(split.labels, split.ids):
        assert np.flatnonzero(row).tolist() == np.unique(masks[name]).tolist()  # background only if seen
    expect_error(train_mlmt.main, ["--dataset", "cityscapes"], capsys, "--dataset cityscapes is not supported")


# --- whole runs -------------------------------------------------------------------------------------

def test_two_epochs_write_files_that_evaluate_with_mlmt_accepts(voc, reference, tmp_path, capsys):
    files = sorted(os.listdir(reference))
    for epoch in (1, 2):
        for tag in ("val", "ema"):
            raw = np.loadtxt(reference / f"output_{tag}_raw_{epoch}.txt")
            binary = np.loadtxt(reference / f"output_{tag}_bin_{epoch}.txt")
            assert raw.shape == binary.shape == (3, 21) and ((raw >= 0) & (raw <= 1)).all()
            assert np.array_equal(binary, (raw > 0.5).astype(float))
    first = (reference / "output_ema_raw_2.txt").read_text().splitlines()[0].split()
    assert len(first) == 21 and all(len(v.split(".")[1]) == 6 for v in first)  # %f
    assert {"args.json", "metrics.jsonl", "latest.pth"} <= set(files)
    records = [json.loads(line) for line in open(reference / "metrics.jsonl")]
    assert [r["iter"] for r in records if "loss_class" in r] == list(range(EPOCHS * ITERS_PER_EPOCH))
    assert [r["epoch"] for r in records if "ema_mAP" in r] == [1, 2]
    # the segmenter side: one step of train_full, then evaluate.py --with-mlmt with the teacher's file
    code, _, err = run_main(train_full.main, tiny_train_flags(voc, tmp_path / "seg", "--num-steps", "1"), capsys)
    assert code == 0, err
    code, out, err = run_main(evaluate.main, tiny_eval_flags(voc, tmp_path / "seg" / "VOC_1.pth", tmp_path / "res",
                                                             "--with-mlmt", "--mlmt-file",
                                                             str(reference / "output_ema_raw_2.txt")), capsys)
    assert code == 0, err
    assert "meanIOU:" in out


def test_crash_then_resume_gives_identical_files(voc, reference, tmp_path):
    with crash_at(MLMTStep, ITERS_PER_EPOCH + 1):
        run_main(train_mlmt.main, mlmt_flags(voc, tmp_path))
    assert torch.load(tmp_path / "latest.pth", weights_only=True)["iteration"] == ITERS_PER_EPOCH
    code, _, _ = run_main(train_mlmt.main, mlmt_flags(voc, tmp_path, "--resume", "auto"))
    assert code == 0
    assert output_files(tmp_path) == output_files(reference)
    assert_identical(final_state(tmp_path), final_state(reference))


@pytest.mark.parametrize("at", [1, ITERS_PER_EPOCH - 1])
def test_sigterm_then_resume_auto_gives_identical_files(voc, reference, tmp_path, monkeypatch, capsys, at):
    """SIGTERM during iteration `at`: the run stops after it (or, when it is the epoch's last, after the
    epoch's validation), saves its state, exits 143; --resume auto then ends bit-identical."""
    original_call = MLMTStep.__call__

    def signalled(self, iteration, *args, **kwargs):
        if iteration == at:
            os.kill(os.getpid(), signal.SIGTERM)  # what a cluster's pre-emption sends
        return original_call(self, iteration, *args, **kwargs)

    monkeypatch.setattr(MLMTStep, "__call__", signalled)
    code, _, err = run_main(train_mlmt.main, mlmt_flags(voc, tmp_path), capsys)
    assert code == 128 + signal.SIGTERM, err
    assert "--resume auto" in err
    assert torch.load(tmp_path / "latest.pth", weights_only=True)["iteration"] == at + 1
    assert (at == ITERS_PER_EPOCH - 1) == (tmp_path / "output_ema_raw_1.txt").is_file()
    monkeypatch.setattr(MLMTStep, "__call__", original_call)
    code, out, _ = run_main(train_mlmt.main, mlmt_flags(voc, tmp_path, "--resume", "auto"), capsys)
    assert code == 0 and f"at iteration {at + 1}" in out
    assert output_files(tmp_path) == output_files(reference)
    assert_identical(final_state(tmp_path), final_state(reference))
    iters = [r["iter"] for r in map(json.loads, open(tmp_path / "metrics.jsonl")) if "loss_class" in r]
    assert iters == list(range(EPOCHS * ITERS_PER_EPOCH))  # none logged twice


def test_bf16_channels_last_and_the_fixed_profile_run(voc, tmp_path):
    code, _, _ = run_main(train_mlmt.main, mlmt_flags(voc, tmp_path, "--amp", "bf16", "--channels-last",
                                                      "--fidelity", "fixed", "--num-epochs", "1"))
    assert code == 0
    raw = np.loadtxt(tmp_path / "output_ema_raw_1.txt")
    assert raw.shape == (3, 21) and np.isfinite(raw).all()
    saved = torch.load(tmp_path / "latest.pth", weights_only=True)
    assert saved["model"]["conv1.weight"].dtype == torch.float32


def test_a_first_run_that_derives_the_labels_equals_a_later_run(tmp_path):
    """The first run on a dataset derives the image-level labels (and caches them); a later run reads
    the cache. Deriving must not draw from the global RNG that the networks' initialisation uses:
    both runs end with the same weights (a loader drawing its seed from it made them differ)."""
    data = make_voc(str(tmp_path / "voc"), sizes_train=TRAIN_SIZES)
    for name in ("first", "later"):
        code, _, _ = run_main(train_mlmt.main, mlmt_flags(data, tmp_path / name, "--num-epochs", "1"))
        assert code == 0
    assert_identical(final_state(tmp_path / "first"), final_state(tmp_path / "later"))
