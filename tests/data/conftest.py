"""Fixtures for the data tests: tiny datasets in every layout (built by dataset_builders)."""

from dataset_builders import (  # noqa: F401  (re-exported as fixtures)
    coco_json_path,
    coco_png_root,
    davis_root,
    fss_root,
    folder_root,
    pascal_root,
    yolo_root,
)
