"""Face detection: YuNet through OpenCV's FaceDetectorYN (a declared model file), else a Haar
cascade when this OpenCV has one.

A detector takes RGB pixels and returns faces with five landmarks each: the eye on the image's
left, the other eye, the nose tip, and the mouth corners left then right, in input pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stablecore import ModelFile

YUNET = ModelFile(
    url="https://media.githubusercontent.com/media/opencv/opencv_zoo/main/models/"
        "face_detection_yunet/face_detection_yunet_2023mar.onnx",
    sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
    licence="MIT (OpenCV Zoo)")
# Where a Haar cascade may be: OpenCV 4 wheels ship them; Debian's opencv-data installs them.
HAAR_NAME = "haarcascade_frontalface_default.xml"
HAAR_FOLDERS = ("/usr/share/opencv4/haarcascades", "/usr/share/opencv/haarcascades")
# Landmarks inside a Haar box (fractions of its width and height): it finds boxes only.
HAAR_LANDMARKS = np.array([[0.32, 0.40], [0.68, 0.40], [0.50, 0.58], [0.36, 0.76],
                           [0.64, 0.76]], np.float32)


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x, y, width, height
    landmarks: np.ndarray  # 5 x 2
    score: float

    def to_json(self) -> dict[str, float]:
        x, y, w, h = self.box
        marks = {f"{name}_{axis}": round(float(v), 2)
                 for name, point in zip(LANDMARK_NAMES, self.landmarks, strict=True)
                 for axis, v in zip("xy", point, strict=True)}
        return {"x": round(x, 2), "y": round(y, 2), "width": round(w, 2), "height": round(h, 2),
                "score": round(self.score, 4), **marks}


LANDMARK_NAMES = ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right")
Detector = Callable[[np.ndarray, float], list[Face]]  # (RGB pixels, confidence) -> faces


def yunet(path: Path) -> Detector:
    """YuNet on the CPU. Its input size follows each image; scores below `confidence` go."""
    try:
        net = cv2.FaceDetectorYN.create(str(path), "", (320, 320), 0.5, 0.3, 5000)
    except cv2.error as e:
        raise ValueError(f"cannot load the YuNet face detector {path.name}: "
                         f"{str(e).strip().splitlines()[-1]}") from None

    def detect(pixels: np.ndarray, confidence: float) -> list[Face]:
        net.setInputSize((pixels.shape[1], pixels.shape[0]))
        net.setScoreThreshold(confidence)
        _, rows = net.detect(np.ascontiguousarray(pixels[..., ::-1]))
        rows = np.zeros((0, 15), np.float32) if rows is None else rows
        return [Face(tuple(float(v) for v in r[:4]), r[4:14].reshape(5, 2).astype(np.float32),
                     float(r[14])) for r in rows]

    return detect


def haar_file() -> Path | None:
    data = getattr(cv2, "data", None)
    folders = [getattr(data, "haarcascades", ""), *HAAR_FOLDERS]
    return next((Path(f) / HAAR_NAME for f in folders
                 if f and (Path(f) / HAAR_NAME).is_file()), None)


def haar() -> Detector:
    """OpenCV's frontal-face Haar cascade; landmarks are placed inside its boxes."""
    path = haar_file()
    if not hasattr(cv2, "CascadeClassifier") or path is None:
        raise ValueError(f"no face detector: the YuNet model file is not downloaded (run "
                         f"`stable-core models pull restore`) and OpenCV {cv2.__version__} has "
                         "no Haar cascade to fall back on (OpenCV 5 wheels ship none)")
    cascade = cv2.CascadeClassifier(str(path))

    def detect(pixels: np.ndarray, confidence: float) -> list[Face]:
        gray = cv2.equalizeHist(cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY))
        neighbours = 3 + round(6 * confidence)  # stricter as confidence rises
        boxes = cascade.detectMultiScale(gray, 1.1, neighbours, minSize=(24, 24))
        return [Face((float(x), float(y), float(w), float(h)),
                     HAAR_LANDMARKS * (w, h) + (x, y), 1.0) for x, y, w, h in boxes]

    return detect
