"""Colour label maps, overlays and image montages (RGB uint8 numpy arrays)."""
import cv2
import numpy as np


def colorize(label, palette):
    """Class indices -> RGB with a (256, 3) palette (the dataset's own; values clipped to 0..255)."""
    return np.asarray(palette, np.uint8)[np.asarray(label, np.int64).clip(0, 255)]


def overlay(image_rgb, label, palette, alpha=0.55):
    """The label's colours blended over the image where the label is not background (0)."""
    colours = colorize(label, palette).astype(np.float32)
    out = image_rgb.astype(np.float32)
    mask = (np.asarray(label) != 0)[..., None]
    return np.where(mask, (1 - alpha) * out + alpha * colours, out).astype(np.uint8)


def _tile(image, height, width, nearest):
    """The image scaled to fit a height x width tile, aspect ratio kept, centred on white."""
    h, w = image.shape[:2]
    scale = min(height / h, width / w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)
    tile = np.full((height, width, 3), 255, np.uint8)
    top, left = (height - size[1]) // 2, (width - size[0]) // 2
    tile[top:top + size[1], left:left + size[0]] = resized
    return tile


def montage(rows, headers=None, tile=(160, 160), nearest_columns=()):
    """A grid of RGB tiles: rows[r][c], each fitted into `tile` (h, w) keeping its aspect ratio;
    optional column headers."""
    h, w = tile
    grid = [np.concatenate([_tile(img, h, w, c in nearest_columns) for c, img in enumerate(row)], axis=1)
            for row in rows]
    out = np.concatenate(grid, axis=0)
    if headers:
        bar = np.full((24, out.shape[1], 3), 255, np.uint8)
        for c, text in enumerate(headers):
            cv2.putText(bar, text, (c * w + 6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        out = np.concatenate([bar, out], axis=0)
    return out


def read_rgb(path):
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def save_rgb(path, image_rgb):
    cv2.imwrite(path, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
