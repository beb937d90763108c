"""Evaluation metrics that wrap the official protocols: `coco_eval` (pycocotools, no torch) and
`coco` (the torchmetrics Metric used in validation)."""
