"""evaluate.py against the original evaluate.py on a VOC, a PASCAL-Context and a Cityscapes folder,
one checkpoint each (exported for the original by `python -m model.weights export-original`), with
and without the MLMT fusion: the validation items, each image's prediction, per-class IoU and mIoU,
result.txt and the printed per-class IoU. The fusion case has pixels where the original's
multiplication of absent classes' logits by 0 and the corrected masking predict differently."""
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import evaluate as evaluate_py
from data import get_dataset
from model import build_segmenter
from model.weights import main as weights_main
from tests.crosscheck.common import fmt, iou_lines, linked_workdir, max_abs, result_txt_differences
from tests.crosscheck.conftest import run_original, with_our_flags
from tests.helpers import run_main
from utils.metrics import class_iou, mean_iou

pytestmark = pytest.mark.original


def calibrated_model(num_classes, images):
    """DeepLabv2-R101 (2 branches) with He-initialised convs and the BN statistics of `images`, so that
    its predictions vary from pixel to pixel (a fresh network predicts nearly one class everywhere)."""
    torch.manual_seed(0)
    model = build_segmenter("resnet101", num_classes, "deeplabv2", aspp_branches=2, init="kaiming")
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the calibration passes
    model.train()
    with torch.no_grad():
        for image in images:
            model(torch.as_tensor(image)[None])
    for m in norms:
        m.momentum = 0.1
    return model.eval()


CASES = {
    "pascal_voc": dict(classes=21, ours=lambda d: ["--data-dir", d["voc"], "--data-list",
                                                   os.path.join(d["voc"], "lists/val.txt")],
                       theirs=lambda d: ["--data-dir", d["voc"], "--data-list", os.path.join(d["voc"], "lists/val.txt")],
                       links=lambda d: {}),
    "pascal_context": dict(classes=60, ours=lambda d: ["--data-dir", d["context"]], theirs=lambda d: [],
                           links=lambda d: {"data/pcontext_dataset": d["context"]}),
    "cityscapes": dict(classes=19, ours=lambda d: ["--data-dir", d["city"]], theirs=lambda d: [],
                       links=lambda d: {"data/city_dataset": d["city"]}),
}


def their_name(dataset, entry):
    """An entry of the original's order as our image id."""
    base = os.path.basename(entry)
    if dataset == "cityscapes":
        frame = base[:-len("_leftImg8bit.png")]
        return f"{frame.split('_')[0]}/{frame}"
    return base[:-len(".jpg")] if base.endswith(".jpg") else base


@pytest.mark.parametrize("dataset, fusion", [("pascal_voc", False), ("pascal_voc", True), ("pascal_context", False),
                                             ("cityscapes", False)],
                         ids=["voc", "voc-mlmt", "context", "cityscapes"])
def test_evaluate(original, voc, context, city, tmp_path, capsys, report, dataset, fusion):
    case, folders = CASES[dataset], {"voc": voc, "context": context, "city": city}
    common = ["--dataset", dataset, "--num-classes", str(case["classes"])]
    ours_argv = with_our_flags("evaluate", common + case["ours"](folders) + ["--num-workers", "0"])
    val = get_dataset(dataset).build_val(evaluate_py.evaluation_data(evaluate_py.parse_args(ours_argv + ["--restore-from", "x"])))
    model = calibrated_model(case["classes"], [val[i][0] for i in range(len(val))])
    checkpoint, exported = str(tmp_path / "VOC_1.pth"), str(tmp_path / "VOC_1_original.pth")
    torch.save(model.state_dict(), checkpoint)
    assert run_main(weights_main, ["export-original", checkpoint, exported], capsys)[0] == 0
    extra = []
    if fusion:  # background and three classes present in each image (> 0.2), the others absent
        rng = np.random.default_rng(0)
        table = rng.random((len(val), case["classes"])) * 0.2
        for row in table:
            row[rng.choice(np.arange(1, case["classes"]), 3, replace=False)] = 0.9
        table[:, 0] = 1.0
        np.savetxt(str(tmp_path / "mlmt.txt"), table, fmt="%f")
        extra = ["--with-mlmt", "--mlmt-file", str(tmp_path / "mlmt.txt")]

    confusions = []
    real_evaluate = evaluate_py.evaluate
    evaluate_py.evaluate = lambda *a, **k: confusions.append(real_evaluate(*a, **k)) or confusions[-1]
    try:
        code, out, err = run_main(evaluate_py.main, ours_argv + extra + [
            "--restore-from", checkpoint, "--save-dir", str(tmp_path / "ours"), "--save-output-images"], capsys)
    finally:
        evaluate_py.evaluate = real_evaluate
    assert code == 0, err
    names = list(val.ids)
    theirs = run_original(original, "evaluate", {
        "argv": common + case["theirs"](folders) + extra + ["--restore-from", exported,
                                                            "--save-dir", str(tmp_path / "theirs")],
        "workdir": linked_workdir(str(tmp_path / "work"), case["links"](folders)),
        "items": [n.split("/")[-1] if dataset == "cityscapes" else i for i, n in enumerate(names)]}, tmp_path)

    label = f"evaluate.py {dataset}{' --with-mlmt' if fusion else ''}"
    if not fusion:  # the validation items themselves (the same with and without fusion)
        image_diff = max(max_abs(val[i][0], np.asarray(theirs["items"][i][0])) for i in range(len(val)))
        label_diff = sum(int((np.asarray(val[i][1]) != np.asarray(theirs["items"][i][1])).sum()) for i in range(len(val)))
        ok = image_diff == 0 and label_diff == 0
        report(f"{dataset} validation", f"{len(val)} items: image floats, labels", f"{fmt(image_diff)}; "
               f"{label_diff} label pixels", ok)
        assert ok

    agree, total, gt_differ = 0, 0, 0
    for entry, (gt, pred) in zip(theirs["order"], theirs["pairs"]):
        name = their_name(dataset, entry)
        ours_pred = np.asarray(Image.open(os.path.join(str(tmp_path / "ours"), name + ".png")))
        index = names.index(name)
        h, w = val[index][2]
        ours_gt = np.asarray(val[index][1])[:h, :w]
        gt_differ += int((ours_gt.ravel() != gt).sum())
        agree += int((ours_pred.ravel() == pred).sum())
        total += pred.size
    their_iou = np.asarray(theirs["jaccard"][1])
    our_iou = class_iou(confusions[0]).numpy()
    both_nan = np.isnan(their_iou) & np.isnan(our_iou)
    iou_diff = float(np.max(np.where(both_nan, 0.0, np.abs(their_iou - our_iou))))
    miou_diff = abs(mean_iou(confusions[0]) - theirs["jaccard"][0])
    confusion_diff = int(np.abs(confusions[0].numpy() - theirs["jaccard"][2]).sum())
    predicted = len(np.unique(np.concatenate([p for _, p in theirs["pairs"]])))
    ok = agree == total and gt_differ == 0 and iou_diff == 0 and miou_diff <= 1e-12 and confusion_diff == 0
    report(label, f"{total} pixels ({predicted} classes predicted): predictions, scored labels; per-class IoU, "
                  f"mIoU ({theirs['jaccard'][0]:.4f})",
           f"{total - agree} pixels, {gt_differ} labels; IoU {fmt(iou_diff)}, mIoU {fmt(miou_diff)}", ok)
    assert ok
    assert predicted > 2, "the test network should predict several classes"

    with open(tmp_path / "ours" / "result.txt") as f:
        ours_txt = f.read()
    differences = result_txt_differences(ours_txt, theirs["result_txt"], same_names=dataset != "pascal_context")
    differences += printed_iou_differences(our_iou, theirs["stdout"])
    ok = not differences
    report(label, "result.txt (per-class IoU as the original rounds it, mIoU" + (", class names" if dataset !=
           "pascal_context" else "; class names differ: docs/original.md") + ") and the per-class IoU it prints",
           "identical" if ok else "; ".join(differences[:3]), ok)
    assert ok

    if fusion:  # the two fusions differ on this image set, and the original is the multiplication
        code, _, err = run_main(evaluate_py.main, ours_argv + extra + [
            "--restore-from", checkpoint, "--save-dir", str(tmp_path / "masked"), "--save-output-images",
            "--mlmt-fusion", "mask"], capsys)
        assert code == 0, err
        changed = sum(int((np.asarray(Image.open(tmp_path / "masked" / f"{n}.png")) !=
                           np.asarray(Image.open(tmp_path / "ours" / f"{n}.png"))).sum()) for n in names)
        report(label, "pixels where --mlmt-fusion mask predicts otherwise than the original's multiplication by 0 "
                      "(which the predictions above equal)", f"{changed} of {total}", changed > 0)
        assert changed > 0


def printed_iou_differences(our_iou, their_stdout):
    """The original prints the classes whose IoU is above 0 (2 decimals): each against ours."""
    printed, _ = iou_lines(their_stdout)
    expected = {i for i, v in enumerate(our_iou) if v > 0}
    out = [] if set(printed) == expected else [f"printed classes {sorted(printed)} vs {sorted(expected)}"]
    return out + [f"printed class {i}: {v} vs {our_iou[i]}" for i, (_, v) in printed.items()
                  if i < len(our_iou) and f"{our_iou[i]:.2f}" != v]
