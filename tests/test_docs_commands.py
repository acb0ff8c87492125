"""Every command shown in README.md and docs/*.md runs in a fresh copy of the repository.

The copy holds the repository's tracked files and nothing else; the test adds only what a user would
download, at the paths the documents give (./data/voc_dataset/, ./data/voc_list/,
./data/pcontext_dataset/, ./data/city_dataset/, mydata/), never a file the repository ships: the
commands read the shipped splits/<dataset>/split_0.pkl, so the tiny Context and Cityscapes training
sets list as many images as the real ones (hard links to a few files). Each ```bash block's commands
run in document order, as typed, so that one command's outputs are the next one's inputs (the s4GAN
run writes the split that train_mlmt.py reads). Only the sizes change: flags appended after the
command's own (argparse keeps the last) for a small backbone, small crops and two iterations; a
snapshot path named for a long run (VOC_30000.pth) is read as the one the short run wrote. The few
commands that cannot run in a test are listed in NOT_RUN with the reason.
"""
import glob
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

import evaluate
import reproduce
import train_full
import train_mlmt
import train_s4GAN
import train_s4GAN_wrn38
from data import check as data_check, context as data_context, voc as data_voc
from data.synthetic import write_dataset
from tests.city_fixture import make_city
from tests.context_fixture import label_map, write_images, write_list
from tests.helpers import ROOT, copy_repository, run_main, tracked_files
from tests.voc_fixture import make_voc
from data.context_layout import map_category_ids

DOCUMENTS = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
# the commands no test can run, and why (each is still checked to be in the documents)
NOT_RUN = {
    "make demo": "the demo itself: tests/test_everyday.py runs demo.main at a tiny size",
    "make test": "the test suite itself (what CI runs)",
    "git clone https://github.com/sud0301/semisup-semseg /path/to/semisup-semseg": "needs the network",
    "python3 -m venv .venv && . .venv/bin/activate": "the environment the tests already run in",
    "pip install torch torchvision --index-url https://download.pytorch.org/whl/cu126": "needs the network",
    "pip install -r requirements.txt": "needs the network (make test installs the same file)",
    'python -c import torch; print(torch.cuda.get_device_name(0))': "needs a GPU (tests/test_cuda.py)",
    "python -m pytest -m original --original /path/to/semisup-semseg": "needs the authors' checkout (tests/crosscheck/)",
    "make crosscheck ORIGINAL=/path/to/semisup-semseg": "needs the authors' checkout (tests/crosscheck/)",
}
TINY_SEGMENTATION = ["--backbone", "resnet18", "--restore-from", "none", "--input-size", "33,33", "--batch-size", "2",
                     "--num-steps", "2", "--save-pred-every", "2", "--num-workers", "0"]
SCRIPTS = {  # program -> (main, flags appended for the test's sizes)
    "train_full.py": (train_full.main, TINY_SEGMENTATION),
    "train_s4GAN.py": (train_s4GAN.main, TINY_SEGMENTATION),
    "train_s4GAN_wrn38.py": (train_s4GAN_wrn38.main, [
        "--wrn-width-mult", "0.0625", "--input-size", "64,128", "--batch-size", "2", "--batch-size-unlab", "2",
        "--num-steps", "2", "--save-pred-every", "2", "--num-workers", "0", "--val-images", "1",
        "--restore-from", "none"]),
    "train_mlmt.py": (train_mlmt.main, [
        "--backbone", "resnet18", "--pretrained", "none", "--image-size", "64", "--batch-size-lab", "2",
        "--batch-size-unlab", "2", "--batch-size-val", "2", "--num-epochs", "1", "--evaluation-epochs", "1",
        "--workers", "0"]),
    "evaluate.py": (evaluate.main, ["--num-workers", "0"]),
    "-m data.check": (data_check.main, []),
    "-m data.voc": (data_voc.main, []),
    "-m data.context": (data_context.main, []),
}
# a model other than DeepLabv2: one of its trunks and a crop it can take, appended after the tiny sizes
MODEL_SIZES = {"deeplabv3p": ["--backbone", "resnet50", "--input-size", "65,65"]}
VOC_IMAGES = 16  # 1/8 gives two labeled images
MODERN_LIST = "splits/voc/classic/92.txt"  # the column of today's VOC tables the documents' runs train
MODERN_DATA = os.path.join("data", "voc_modern")  # its images, beside the 92 listed ones
# the real training sets' sizes, which the shipped split files are permutations of
CONTEXT_IMAGES, CITY_IMAGES = 4996, 2975


def document_commands():
    """[(document, command as typed, argv)] of every ```bash block, in order."""
    out = []
    for doc in DOCUMENTS:
        text = open(os.path.join(ROOT, doc)).read()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                argv = shlex.split(line, comments=True)
                if argv:
                    out.append((doc, " ".join(argv), argv))
    return out


def file_digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def link_copies(source, targets):
    """`targets` as hard links to `source` (copies where links are not allowed): thousands of files
    cost no time and no space."""
    for target in targets:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy(source, target)


def make_data(root):
    """What a user downloads, at the documents' paths, made tiny."""
    voc = make_voc(os.path.join(root, "data", "voc_dataset"), sizes_train=[(40 + k, 48) for k in range(VOC_IMAGES)],
                   sizes_val=((50, 40), (44, 52)))
    os.makedirs(os.path.join(root, "data", "voc_list"))
    for name in ("train_aug.txt", "val.txt"):
        shutil.copy(os.path.join(voc, "lists", name), os.path.join(root, "data", "voc_list", name))
    context = os.path.join(root, "data", "pcontext_dataset")
    rng = np.random.default_rng(0)
    items = {"train": [(f"2008_{k:06d}", (36, 48)) for k in range(8)],
             "val": [("2010_000001", (40, 30)), ("2010_000002", (30, 44))]}
    write_images(context, items["train"] + items["val"])
    os.makedirs(os.path.join(context, "SegmentationClassContext"))
    for split, entries in items.items():
        for name, (h, w) in entries:
            Image.fromarray(map_category_ids(label_map(rng, h, w))).save(
                os.path.join(context, "SegmentationClassContext", name + ".png"))
    train = [f"2008_{k:06d}" for k in range(CONTEXT_IMAGES)]
    for folder, suffix in (("JPEGImages", ".jpg"), ("SegmentationClassContext", ".png")):
        link_copies(os.path.join(context, folder, train[0] + suffix),
                    [os.path.join(context, folder, name + suffix) for name in train[8:]])
    write_list(os.path.join(context, "train.txt"), train)
    write_list(os.path.join(context, "val.txt"), [n for n, _ in items["val"]])
    city = make_city(os.path.join(root, "data", "city_dataset"), layout="original",
                     cities={"train": {"aachen": 12, "bochum": 8}, "val": {"frankfurt": 2}})
    frames = [f"zurich_{k:06d}_000019" for k in range(CITY_IMAGES - 20)]
    for folder, suffix in (("leftImg8bit", "_leftImg8bit.png"), ("gtFine_trainvaltest/gtFine", "_gtFine_labelIds.png")):
        link_copies(os.path.join(city, folder, "train", "aachen", "aachen_000001_000019" + suffix),
                    [os.path.join(city, folder, "train", "zurich", frame + suffix) for frame in frames])
    # for today's protocol (docs/modern-protocol.md), a VOC folder of its own (make-lists reads the other
    # one whole) holding the images of the shipped classic 92 list beside a few others, and its list
    modern = make_voc(os.path.join(root, MODERN_DATA), sizes_train=[(40 + k, 48) for k in range(4)],
                      sizes_val=((50, 40),))
    with open(os.path.join(ROOT, MODERN_LIST)) as f:
        listed = [line.strip() for line in f if line.strip()]
    first = voc_ids(modern)[0]
    for folder, suffix in (("JPEGImages", ".jpg"), ("SegmentationClassAug", ".png")):
        link_copies(os.path.join(modern, folder, first + suffix),
                    [os.path.join(modern, folder, n + suffix) for n in listed])
    write_list(os.path.join(modern, "lists", "train_modern.txt"), voc_ids(modern) + listed)
    mine = os.path.join(root, "mydata")
    write_dataset(mine, num_train=16, num_val=3, seed=0, max_size=48, min_size=40)
    extra = [f"extra_{k}" for k in range(3)]
    for name in extra:  # images without a label PNG, for --unlabeled-list
        Image.fromarray(rng.integers(0, 256, (44, 44, 3), dtype=np.uint8)).save(
            os.path.join(mine, "JPEGImages", name + ".jpg"))
    write_list(os.path.join(mine, "lists", "unlabeled.txt"), extra)
    return root


def voc_ids(voc):
    with open(os.path.join(voc, "lists", "train_aug.txt")) as f:
        return [line.strip() for line in f if line.strip()]


def short_run_file(path):
    """A path named for a long run (VOC_30000.pth, output_ema_raw_100.txt) that does not exist: the
    file of the short run that stands in its place (the same name with other numbers)."""
    if os.path.exists(path) or not os.path.isdir(os.path.dirname(path) or "."):
        return path
    pattern = re.compile(re.sub(r"\d+", r"\\d+", re.escape(os.path.basename(path))) + "$")
    found = [f for f in os.listdir(os.path.dirname(path) or ".") if pattern.match(f)]
    assert len(found) == 1, (path, found)
    return os.path.join(os.path.dirname(path), found[0])


def reproduce_flags(argv, project):
    """reproduce.py on the project's VOC copy: one fraction, one split, the baseline, two steps."""
    out = os.path.join(project, "reproduce")
    data = os.path.join(project, "data", "voc_dataset")
    flags = ["--out", out, "--results-dir", os.path.join(out, "results"), "--emit-to", os.path.join(out, "jobs.sh")]
    if "--run" in argv or "--collect" in argv or "--emit" in argv:
        modern = argv[argv.index("--table") + 1] in ("voc-classic", "voc-blended")
        lists = os.path.join(project, "data", "voc_list")
        train_list, val_list = os.path.join(lists, "train_aug.txt"), os.path.join(lists, "val.txt")
        if modern:
            data = os.path.join(project, MODERN_DATA)
            train_list, val_list = os.path.join(data, "lists", "train_modern.txt"), os.path.join(data, "lists", "val.txt")
        flags += ["--data-dir", data, "--ratios", "92" if modern else "1/8", "--splits", "0", "--methods", "baseline",
                  "--steps", "2", "--eval-flags", f"--data-list {val_list} --num-workers 0",
                  "--", "--split-id", "none", "--data-list", train_list,
                  *TINY_SEGMENTATION, *(MODEL_SIZES["deeplabv3p"] if modern else [])]
    return flags


def run_command(argv, project, capsys):
    """Run one document command in the project folder; returns (exit status, output)."""
    if argv[0] == "torchrun":  # on 2 CPU cores: 2 processes instead of the document's N
        argv = [a if not a.startswith("--nproc_per_node") else "--nproc_per_node=2" for a in argv[1:]]
        env = dict(os.environ, PYTHONPATH=project, OMP_NUM_THREADS="1")
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", *argv,
                               *SCRIPTS[argv[1]][1]], cwd=project, env=env, capture_output=True, text=True,
                              timeout=300)
        return proc.returncode, proc.stdout + proc.stderr
    assert argv[0] == "python", argv
    program, args = (f"-m {argv[2]}", argv[3:]) if argv[1] == "-m" else (argv[1], argv[2:])
    args = [short_run_file(a) if a.endswith((".pth", ".txt")) and "/" in a else a for a in args]
    if program == "reproduce.py":
        main, extra = reproduce.main, reproduce_flags(args, project)
    else:
        main, extra = SCRIPTS[program]
        if "--model" in args:
            extra = extra + MODEL_SIZES.get(args[args.index("--model") + 1], [])
    code, out, err = run_main(main, args + extra, capsys)
    return code, out + err


def test_every_command_of_the_documents_runs(tmp_path, capsys, monkeypatch):
    commands = document_commands()
    assert set(NOT_RUN) <= {c for _, c, _ in commands}, "NOT_RUN lists a command the documents no longer show"
    project = copy_repository(str(tmp_path))
    shipped = {f: file_digest(os.path.join(project, f)) for f in tracked_files()}
    make_data(project)
    monkeypatch.chdir(project)
    # the defaults that name a shipped file (train_full.py's split) find it in the copy
    assert os.path.isfile(train_full.get_args_parser().get_default("split_id"))
    ran = 0
    for doc, command, argv in commands:
        if command in NOT_RUN:
            continue
        code, output = run_command(argv, project, capsys)
        assert code == 0, f"{doc}: `{command}` exited with {code}:\n{output[-3000:]}"
        ran += 1
    assert ran >= 20, ran
    changed = [f for f, digest in shipped.items() if file_digest(os.path.join(project, f)) != digest]
    assert not changed, f"the test or a command changed files the repository ships: {changed}"


def test_the_readme_is_short_and_every_link_resolves():
    """README.md: at most 200 lines, a link to every page of docs/; every relative link of the
    documents names a file that exists."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert len(readme.splitlines()) <= 200
    for page in glob.glob(os.path.join(ROOT, "docs", "*.md")):
        assert f"docs/{os.path.basename(page)}" in readme, page
    for doc in DOCUMENTS:
        folder = os.path.dirname(os.path.join(ROOT, doc))
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", open(os.path.join(ROOT, doc)).read()):
            if not target.startswith(("http://", "https://")):
                assert os.path.exists(os.path.join(folder, target)), f"{doc} links {target}"
