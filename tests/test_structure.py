"""The layout promises: imports run one way, registries, the original's file names and defaults."""
import argparse
import ast
import os
import sys

import pytest
import torch

import evaluate
import train_full
import train_s4GAN
from engine.state import read_training_state
from model import SEGMENTERS, build_segmenter, canonical_model_name
from model.weights import main as weights_main, read_state_dict
from tests.helpers import ROOT, expect_error, run_main, tiny_eval_flags, tiny_train_flags
from utils.errors import UserError

SCRIPTS = {"train_full", "train_s4GAN", "train_s4GAN_wrn38", "train_mlmt", "evaluate", "demo", "reproduce"}
# package -> our packages it must never import. The layers: scripts -> engine (the run machinery) ->
# methods (the objectives) -> model, data, utils (utils: leaf helpers only); experiments (the
# orchestration behind reproduce.py, demo.py and the studies) runs the scripts as processes and
# reads their files, so it needs none of engine, methods, model. Two folders of programs stand on
# top: studies (one-off studies, built on experiments and below) and benchmarks (timings of
# engine, methods, model, data and utils in process, and of the scripts and the authors' code as
# processes: tests/crosscheck/driver.py is run by path, never imported). Neither imports the other,
# nor the tests; benchmarks need nothing from experiments. No package imports a script, and only the
# tests import benchmarks or studies.
OURS = {"model", "data", "utils", "methods", "engine", "experiments", "studies", "benchmarks", "tests"}
FORBIDDEN = {"model": OURS - {"model", "utils"}, "data": OURS - {"data", "utils"}, "utils": OURS - {"utils"},
             "methods": OURS - {"methods", "model", "data", "utils"},
             "engine": OURS - {"engine", "methods", "model", "data", "utils"},
             "experiments": OURS - {"experiments", "data", "utils"},
             "studies": {"tests", "benchmarks"},
             "benchmarks": {"tests", "studies", "experiments"}}
# The folders whose modules the circle check follows (and the scripts at the root). benchmarks and
# studies are folders of programs without __init__.py: each puts its own folder on sys.path, so a
# bare `import common` there is benchmarks/common.py.
CIRCLE_PACKAGES = ("model", "data", "utils", "methods", "engine", "experiments", "studies", "benchmarks")
PROGRAM_FOLDERS = {"benchmarks", "studies"}


def imported_top_modules(path):
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]


def python_files(package):
    """Every .py file of a package, subpackages included."""
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
        yield from (os.path.join(folder, f) for f in sorted(files) if f.endswith(".py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_run_one_way(package):
    files = list(python_files(package))
    assert files, package
    for path in files:
        imported = set(imported_top_modules(path))
        bad = imported & (FORBIDDEN[package] | SCRIPTS)
        assert not bad, f"{os.path.relpath(path, ROOT)} imports {sorted(bad)}"


def test_the_import_check_sees_subpackages(tmp_path, monkeypatch):
    """A forbidden import two folders down is found."""
    nested = tmp_path / "model" / "sub" / "deeper"
    nested.mkdir(parents=True)
    (nested / "x.py").write_text("from engine import run\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
    with pytest.raises(AssertionError, match="imports"):
        test_imports_run_one_way("model")


def module_name(path):
    """data/context.py -> data.context; data/__init__.py -> data."""
    parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_main_guard(node):
    return isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and {"__name__", "__main__"} <= {
        getattr(n, "id", getattr(n, "value", None)) for n in ast.walk(node.test)}


def import_statements(node):
    """Every import statement of a module, in function bodies too; not those under
    `if __name__ == "__main__":`, which run only in the program started as that module."""
    for child in ast.iter_child_nodes(node):
        if is_main_guard(child):
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        else:
            yield from import_statements(child)


def imported_modules(importer, node, modules):
    """Our modules that an import statement in module `importer` makes Python run: the module named
    and its packages, and the submodules a `from` names. A package the importer lies in has started
    already (Python runs it first), so it counts only where `from package import name` reads a name
    of it that is not a submodule (that name must exist by then)."""
    folder = importer.split(".")[0]

    def ours(name):  # benchmarks and studies import their neighbours by bare name
        local = f"{folder}.{name}"
        return local if folder in PROGRAM_FOLDERS and f"{folder}.{name.split('.')[0]}" in modules else name

    found = set()

    def add(name, read_from=False):
        parts = name.split(".")
        for k in range(1, len(parts) + 1):
            package = ".".join(parts[:k])
            if package in modules and ((read_from and k == len(parts)) or not importer.startswith(package + ".")):
                found.add(package)

    if isinstance(node, ast.Import):
        for alias in node.names:
            add(ours(alias.name))
        return found - {importer}
    base = node.module or ""
    if node.level:  # relative: from the importer's package
        package = importer.split(".") if modules[importer].endswith("__init__.py") else importer.split(".")[:-1]
        base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
    else:
        base = ours(base)
    submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
    for name in submodules:
        add(name)
    add(base, read_from=len(submodules) < len(node.names))
    return found - {importer}


def import_graph():
    """Our module -> the set of our modules it imports."""
    paths = [p for package in CIRCLE_PACKAGES for p in python_files(package)]
    paths += [os.path.join(ROOT, f"{script}.py") for script in sorted(SCRIPTS)
              if os.path.isfile(os.path.join(ROOT, f"{script}.py"))]
    modules = {module_name(p): p for p in paths}
    graph = {}
    for name, path in modules.items():
        with open(path) as f:
            tree = ast.parse(f.read())
        graph[name] = set().union(*(imported_modules(name, n, modules) for n in import_statements(tree)))
    return graph


def import_circles(graph):
    """The circles of `graph`: its strongly connected components of more than one module, each sorted,
    with one module's import of itself counted as a circle too."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1 or v in graph[v]:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(circles)


def test_no_import_circles():
    """No circle of imports among our modules (model, data, utils, methods, engine, experiments,
    studies, benchmarks and the scripts). The rule: every import counts, wherever it stands, module
    level or inside a function; only imports under `if __name__ == "__main__":` do not (they run in
    the program started as that module, not when it is imported). A circle of module-level imports
    fails at import time, depending on which module comes first; an import moved into a function
    only postpones that: the two modules still need each other, and the next import moved to the
    top breaks the program. So a circle is removed by moving code until each module has one job and
    the imports run one way, never by moving an import into a function."""
    circles = import_circles(import_graph())
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_the_circle_check_sees_circles(tmp_path, monkeypatch):
    """A circle closed by an import inside a function, two folders down, is found; so is one through
    a package's __init__.py, and one between neighbours in benchmarks/ imported by bare name."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
    deeper = tmp_path / "data" / "sub" / "deeper"
    deeper.mkdir(parents=True)
    (tmp_path / "data" / "__init__.py").write_text("")
    (deeper / "a.py").write_text("from data.sub.deeper.b import f\n")
    (deeper / "b.py").write_text("def f():\n    from data.sub.deeper import a\n    return a\n")
    (tmp_path / "utils").mkdir()
    (tmp_path / "utils" / "__init__.py").write_text("from utils.x import y\n")
    (tmp_path / "utils" / "x.py").write_text("from utils import z\ny = 1\n")
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "one.py").write_text("import two\n")
    (tmp_path / "benchmarks" / "two.py").write_text("from benchmarks.one import x\n"
                                                    "if __name__ == '__main__':\n    import three\n")
    (tmp_path / "benchmarks" / "three.py").write_text("import two\n")
    assert import_circles(import_graph()) == [["benchmarks.one", "benchmarks.two"],
                                              ["data.sub.deeper.a", "data.sub.deeper.b"], ["utils", "utils.x"]]
    with pytest.raises(AssertionError, match="import circles: benchmarks.one <-> benchmarks.two"):
        test_no_import_circles()
    for path in ("data/sub/deeper/b.py", "utils/x.py", "benchmarks/two.py"):  # each circle opened: all one way
        (tmp_path / path).write_text("")
    test_no_import_circles()


def test_the_loop_and_the_objective_are_one_file_apart():
    """Each trainer writes its loop (tests/test_loop_in_script.py edits it); the s4GAN terms live in
    the file its step comes from."""
    for script, loop in (("train_full.py", "for i in range(run.start, args.num_steps):"),
                         ("train_s4GAN.py", "for i in range(run.start, args.num_steps):"),
                         ("train_mlmt.py", "for epoch in range(run.start // epoch_length, args.num_epochs):")):
        source = open(os.path.join(ROOT, script)).read()
        assert loop in source and "**run.next_batches(i))" in source, script
    assert "train_s4GAN.train(" in open(os.path.join(ROOT, "train_s4GAN_wrn38.py")).read()
    objective = open(os.path.join(ROOT, "methods", "s4gan.py")).read()
    for term in ("def feature_matching_loss", "def self_training_loss", "def discriminator_loss",
                 "def discriminator_input", "loss_ce + self.lambda_fm * loss_fm + self.lambda_st * loss_st"):
        assert term in objective


def test_model_registry_and_the_original_model_names():
    assert canonical_model_name("DeepLab") == canonical_model_name("deeplabv2") == "deeplabv2"
    assert train_s4GAN.parse_args(["--model", "DeepLab"]).model == "deeplabv2"
    model = build_segmenter("resnet18", 3, "deeplabv2", aspp_branches=2)
    groups = model.optim_parameters(1e-3)
    assert [g["lr_mult"] for g in groups] == [1, 10] and groups[1]["lr"] == pytest.approx(1e-2)
    assert SEGMENTERS["deeplabv2"].backbones[0] == "resnet101"


def test_original_defaults_of_the_scripts():
    full, semi = train_full.parse_args([]), train_s4GAN.parse_args([])
    assert full.checkpoint_dir == "./checkpoints/voc_full/" and full.batch_size == 10
    assert full.split_id == "./splits/voc/split_0.pkl" and semi.split_id is None
    assert semi.checkpoint_dir == "./checkpoints/voc_semi_0_125/" and semi.batch_size == 8
    for args in (full, semi):
        assert (args.model, args.backbone, args.num_classes, args.ignore_label) == ("deeplabv2", "resnet101", 21, 255)
        assert args.data_dir == "./data/voc_dataset/" and args.restore_from.endswith("resnet101-5d3b4d8f.pth")
    assert evaluate.get_args_parser().get_default("model") is None  # -> args.json, else deeplabv2
    assert evaluate.parse_args(["--restore-from", "x.pth"]).model == "deeplabv2"


def test_split_files_keep_the_original_names(voc_root, tmp_path, capsys):
    code, _, err = run_main(train_full.main, tiny_train_flags(voc_root, tmp_path / "full", "--num-steps", "1",
                                                              "--labeled-ratio", "0.5", "--split-id", "none"), capsys)
    assert code == 0, err
    assert (tmp_path / "full" / "split.pkl").is_file() and not (tmp_path / "full" / "train_voc_split.pkl").exists()


def test_evaluate_takes_the_model_flags_from_args_json(voc_root, tmp_path, capsys):
    ck = tmp_path / "run"
    code, _, err = run_main(train_full.main, tiny_train_flags(voc_root, ck, "--num-steps", "1"), capsys)
    assert code == 0, err
    argv = tiny_eval_flags(voc_root, ck / "VOC_1.pth", tmp_path / "r")
    del argv[argv.index("--backbone"):argv.index("--backbone") + 2]  # resnet18 comes from args.json
    code, out, err = run_main(evaluate.main, argv, capsys)
    assert code == 0 and "meanIOU" in out, err
    expect_error(evaluate.main, argv + ["--backbone", "resnet50"], capsys, "--backbone resnet50", "--backbone resnet18")


def test_export_original_writes_module_prefixed_keys(tmp_path, capsys):
    model = build_segmenter("resnet18", 3)
    torch.save(model.state_dict(), tmp_path / "VOC_1.pth")
    code, out, err = run_main(weights_main, ["export-original", str(tmp_path / "VOC_1.pth"), str(tmp_path / "o.pth")],
                              capsys)
    assert code == 0, err
    exported = torch.load(tmp_path / "o.pth", weights_only=True)
    assert set(exported) == {"module." + k for k in model.state_dict()}
    assert all(torch.equal(exported["module." + k], v) for k, v in model.state_dict().items())
    assert read_state_dict(str(tmp_path / "o.pth")).keys() == model.state_dict().keys()  # and loads back here


def test_resume_refuses_another_model(tmp_path):
    args = train_s4GAN.parse_args(["--checkpoint-dir", str(tmp_path), "--resume", "auto"])
    saved = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(args).items()}
    torch.save({"format": "semisup-seg-training-state-1", "args": {**saved, "model": "deeplabv3p_wrn38"},
                "world_size": 1}, tmp_path / "latest.pth")
    with pytest.raises(UserError, match="--model 'deeplabv3p_wrn38' -> 'deeplabv2'"):
        read_training_state(args, 1)
    torch.save({"format": "semisup-seg-training-state-1", "args": saved, "world_size": 1}, tmp_path / "latest.pth")
    assert read_training_state(argparse.Namespace(**vars(args)), 1)["args"]["model"] == "deeplabv2"


def test_the_crosscheck_demonstrations_still_find_the_lines_they_change():
    """Each demonstration that breaks our code on purpose (tests/crosscheck/demonstrate.py) names a
    line that must still be there, or the demonstration cannot run."""
    from tests.crosscheck.demonstrate import DEMONSTRATIONS
    changes = [demo[4] for demo in DEMONSTRATIONS if demo[4]]
    assert changes
    for path, old, _ in changes:
        assert old in open(os.path.join(ROOT, path)).read(), f"{path} no longer has {old!r}"

