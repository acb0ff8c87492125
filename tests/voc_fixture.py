"""Tiny datasets in the real VOC on-disk layout, built by the tests themselves (the writer is
data/synthetic.py's write_rectangles, which the benchmarks use too)."""
from data.synthetic import write_label, write_rectangles

__all__ = ["make_voc", "write_label"]


def make_voc(root, sizes_train=((60, 80), (75, 50), (48, 64), (90, 70), (64, 64), (50, 90)),
             sizes_val=((70, 60), (55, 85), (64, 48)), num_classes=21, palette=False, seed=0):
    """Write JPEGImages/, SegmentationClassAug/ and lists/{train_aug,val}.txt; return the root.

    Each image holds a few class rectangles outlined with 255 (void), like VOC's object borders;
    the colour of a rectangle depends on its class so that a model can learn something.
    """
    return write_rectangles(root, sizes_train, sizes_val, num_classes, palette, seed)
