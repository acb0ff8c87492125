"""train_mlmt.py --augment-on-device (methods/mlmt/views.py): the unlabeled views made on the training
device from the draws the CPU pipeline makes for the same item: the teacher views are the CPU's, the
student views within a grey level or two of PIL's; each operation by hand; the CPU pipeline itself
unchanged by the draws' refactoring; a run with the flag trains, resumes exactly and refuses a
resume that changes it."""
import json

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

import train_mlmt
from methods.mlmt import views as dv
from methods.mlmt.labels import DRAWS, ClassifierImages, ImageLabels, view_draws
from tests.helpers import assert_identical, crash_at, run_main
from tests.test_mlmt import ITERS_PER_EPOCH, final_state, mlmt_flags, one_thread, voc  # noqa: F401  (its fixtures)
from methods.mlmt.objective import MLMTStep


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """Eight smooth images (gradients: blur and jitter differences show as such, not as noise)."""
    folder = tmp_path_factory.mktemp("views")
    yy, xx = np.mgrid[0:90, 0:120]
    paths = []
    for k in range(8):
        image = np.stack([(xx * 2 + 20 * k) % 256, (yy * 3) % 256, ((xx + yy) * k) % 256], -1).astype(np.uint8)
        paths.append(str(folder / f"{k}.jpg"))
        Image.fromarray(image).save(paths[-1], quality=95)
    return ImageLabels([str(k) for k in range(8)], paths, np.zeros((8, 21), np.uint8), "test")


def test_the_device_views_follow_the_cpu_views_draw_for_draw(split):
    cpu = ClassifierImages(split, "unlabeled", 64)
    device = ClassifierImages(split, "unlabeled", 64, device_augment=True)
    items = [device[(k, (k, 5, 6, 7))] for k in range(8)]
    images = torch.stack([torch.from_numpy(i[0]) for i in items])
    draws = torch.stack([torch.from_numpy(i[1]) for i in items])
    assert draws.shape == (8, len(DRAWS)) and images.dtype == torch.uint8
    teacher, student = dv.unlabeled_views(images, draws)  # one batch: each image its own draws
    flips = set()
    for k in range(8):
        plain, augmented, _ = cpu[(k, (k, 5, 6, 7))]
        assert np.array_equal(teacher[k].numpy(), plain)
        difference = np.abs(student[k].numpy().astype(int) - augmented.astype(int))
        assert difference.mean() < 2.5, (k, difference.mean())  # a few grey levels at most
        flips.add(bool(draws[k, 9]))
    assert flips == {False, True}  # a wrong flip would differ by far more than the bound


def test_the_draws_are_the_cpu_pipelines():
    """view_draws consumes the generator in the order of the original's transforms: flip, three factors,
    the hue shift, the order, flip, radius (the CPU views made from them are checked against the
    original's code by tests/crosscheck/test_data.py)."""
    rng = np.random.default_rng(3)
    draws = view_draws(np.random.default_rng(3))
    assert draws[0] == (rng.random() < 0.5)
    assert draws[1:4].tolist() == [rng.uniform(0.6, 1.4) for _ in range(3)]
    assert draws[4] == rng.uniform(-0.1, 0.1)
    assert draws[5:9].tolist() == rng.permutation(4).tolist()
    assert draws[9] == (rng.random() < 0.5) and draws[10] == rng.uniform(0.1, 2.0)


def image(*rgb):
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, 2, 2).clone()


def test_each_adjustment_by_hand():
    one = torch.ones(1)
    assert dv.adjust_brightness(image(200, 100, 51), 0.5 * one.view(-1, 1, 1, 1))[0, :, 0, 0].tolist() == [100, 50, 26]
    grey = round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)  # 125
    assert dv.adjust_saturation(image(200, 100, 50), 0 * one.view(-1, 1, 1, 1))[0, :, 0, 0].tolist() == [grey] * 3
    assert dv.adjust_contrast(image(200, 100, 50), 0 * one.view(-1, 1, 1, 1))[0, :, 0, 0].tolist() == [grey] * 3
    assert dv.adjust_hue(image(255, 0, 0), 0.5 * one)[0, :, 0, 0].tolist() == [0, 255, 255]  # red -> cyan
    assert dv.adjust_hue(image(255, 0, 0), torch.tensor([1 / 3]))[0, :, 0, 0].tolist() == [0, 255, 0]  # -> green
    assert dv.adjust_hue(image(90, 90, 90), 0.3 * one)[0, :, 0, 0].tolist() == [90, 90, 90]  # grey has no hue
    x = torch.arange(6.0).view(1, 1, 1, 6).expand(2, 3, 1, 6)
    assert dv.flip(x, torch.tensor([0.0, 1.0]))[:, 0, 0].tolist() == [[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0]]


def test_hue_follows_pil_within_its_byte_hue():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for shift in (-0.1, 0.05, 0.1):
        ours = dv.adjust_hue(torch.from_numpy(array.transpose(2, 0, 1).copy())[None].float(), torch.tensor([shift]))
        theirs = np.asarray(TF.adjust_hue(Image.fromarray(array), shift)).transpose(2, 0, 1)
        assert np.abs(ours[0].numpy() - theirs).mean() < 2.0


def test_blur_keeps_a_flat_image_and_spreads_a_point_as_a_gaussian():
    flat = torch.full((2, 3, 9, 9), 77.0)
    assert torch.equal(dv.gaussian_blur(flat, torch.tensor([0.5, 2.0])), flat)
    point = torch.zeros(1, 1, 15, 15)
    point[0, 0, 7, 7] = 255.0
    out = dv.gaussian_blur(point, torch.tensor([1.0]))
    expected = 255 * np.exp(-0.5) / np.exp(-(np.arange(-6, 7) ** 2) / 2).sum() / np.exp(-(np.arange(-6, 7) ** 2) / 2).sum()
    assert out[0, 0, 7, 8].item() == round(expected)  # one pixel off the centre: the 2-D Gaussian's value
    assert out.sum().item() == pytest.approx(255, abs=6)  # mass kept up to the rounding of each pixel
    assert torch.equal(dv.gaussian_blur(point, torch.tensor([0.1])), point)  # radius 0.1: the pixel stays


def test_a_run_on_device_views_trains_and_resumes_exactly(voc, tmp_path, capsys):  # noqa: F811
    reference, resumed, flag = tmp_path / "reference", tmp_path / "resumed", "--augment-on-device"
    code, _, _ = run_main(train_mlmt.main, mlmt_flags(voc, reference, flag))
    assert code == 0
    records = [json.loads(line) for line in open(reference / "metrics.jsonl")]
    assert all(np.isfinite(r["loss_cons"]) for r in records if "loss_cons" in r)
    with crash_at(MLMTStep, ITERS_PER_EPOCH + 1):
        run_main(train_mlmt.main, mlmt_flags(voc, resumed, flag))
    code, _, _ = run_main(train_mlmt.main, mlmt_flags(voc, resumed, flag, "--resume", "auto"))
    assert code == 0
    assert_identical(final_state(resumed), final_state(reference))
    code, _, err = run_main(train_mlmt.main, mlmt_flags(voc, resumed, "--resume", "auto"), capsys)  # flag dropped
    assert code == 2 and "augment" in err, err
