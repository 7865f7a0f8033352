"""A trtq --metric for a detector with a fused [N, A, 4 + 1 + C] output (YOLOX / YOLOv5 layout).

    trtq calibrate detector.onnx --calib scenes/ --metric docs/examples/box_recall.py:matched_box_recall

trtq calls ``matched_box_recall(reference_outputs, candidate_outputs, inputs)`` once per sample
(batch axis of length 1) and averages the results. The FP32 model's detections are the truth:
the score is the share of them the INT8 model also finds (same class, IoU >= 0.5), so 1.0
means every FP32 box is kept; a sample where FP32 finds nothing scores 1.0 when INT8 finds
nothing either. Edit the constants for your model (boxes as centre x, y, width, height).
"""

import numpy as np

OUTPUT = None        # None: the first output
SCORE = 0.3          # objectness x class score a detection needs
IOU_MATCH = 0.5      # a candidate box matches an FP32 box at this IoU or more
IOU_NMS = 0.5        # non-maximum suppression within a class


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (x1, y1, x2, y2) box with each of ``boxes``."""
    x1, y1 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x2, y2 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def detections(head: np.ndarray):
    """(corner boxes [K, 4], classes [K]) after the score threshold and per-class NMS, of one [A, 4 + 1 + C] head."""
    scores = head[:, 4:5] * head[:, 5:]
    classes, best = scores.argmax(axis=1), scores.max(axis=1)
    keep = best >= SCORE
    centre, size = head[keep, 0:2], head[keep, 2:4]
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    classes, best = classes[keep], best[keep]
    chosen = []
    for index in np.argsort(-best):
        if all(classes[j] != classes[index] or _iou(boxes[index], boxes[j:j + 1])[0] < IOU_NMS for j in chosen):
            chosen.append(index)
    return boxes[chosen], classes[chosen]


def matched_box_recall(reference_outputs, candidate_outputs, inputs) -> float:
    name = OUTPUT or next(iter(reference_outputs))
    ref_boxes, ref_classes = detections(reference_outputs[name][0])
    cand_boxes, cand_classes = detections(candidate_outputs[name][0])
    if not len(ref_boxes):
        return float(not len(cand_boxes))
    used = np.zeros(len(cand_boxes), dtype=bool)
    found = 0
    for box, cls in zip(ref_boxes, ref_classes):
        if not len(cand_boxes):
            break
        iou = np.where((cand_classes == cls) & ~used, _iou(box, cand_boxes), 0.0)
        if iou.max() >= IOU_MATCH:
            used[int(iou.argmax())] = True
            found += 1
    return found / len(ref_boxes)
