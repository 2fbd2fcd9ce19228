"""Crop a face to the 512 x 512 frame restorers expect, and paste it back with a soft edge.

The crop is the similarity transform (rotation, scale, shift) that takes the five landmarks
closest to where FFHQ-trained models have them. Pasting inverts it onto the (optionally
upscaled) picture under a mask that is the crop's own footprint, eroded and feathered inside
it: every pixel outside a face's crop is left exactly as it was.
"""

from __future__ import annotations

import cv2
import numpy as np

SIZE = 512
# Eyes, nose tip and mouth corners of an aligned FFHQ face at 512 x 512 (facexlib's template).
TEMPLATE = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                     [201.26117, 371.41043], [313.08905, 371.15118]], np.float32)


def matrix(landmarks: np.ndarray) -> np.ndarray:
    """The 2 x 3 similarity transform from image pixels to the aligned crop."""
    found, _ = cv2.estimateAffinePartial2D(landmarks.astype(np.float32), TEMPLATE,
                                           method=cv2.LMEDS)
    if found is None:
        raise ValueError("cannot align a face: its landmarks are degenerate")
    return found


def crop(pixels: np.ndarray, to_crop: np.ndarray) -> np.ndarray:
    """The aligned SIZE x SIZE face (uint8 RGB); outside the image is mirrored."""
    return cv2.warpAffine(pixels, to_crop, (SIZE, SIZE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)


def paste(canvas: np.ndarray, face: np.ndarray, to_crop: np.ndarray, scale: float) -> None:
    """Blend `face` (SIZE x SIZE, float32) into `canvas` (float32, the input `scale` times
    larger) in place, where `to_crop` took it from the input."""
    back = cv2.invertAffineTransform(to_crop) * scale
    back[:, 2] += (scale - 1) / 2  # pixel centres: u = s * (x + 0.5) - 0.5
    size = (canvas.shape[1], canvas.shape[0])
    warped = cv2.warpAffine(face, back, size, flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    mask = cv2.warpAffine(np.ones((SIZE, SIZE), np.float32), back, size, flags=cv2.INTER_LINEAR,
                          borderValue=0)
    mask[mask < 1] = 0  # partially covered border pixels are no part of the face
    edge = max(1, int(np.sqrt(mask.sum()) / 20))  # feather width grows with the face
    mask = cv2.erode(mask, np.ones((2 * edge + 1, 2 * edge + 1), np.uint8))
    mask = cv2.GaussianBlur(mask, (2 * edge + 1, 2 * edge + 1), 0)  # stays in the footprint
    canvas *= 1 - mask[..., None]
    canvas += warped * mask[..., None]
