"""Evaluation and calibration data: the Fashion-MNIST demo (datasets) and the user's data (loaders, prepare)."""
from harness.data.loaders import DataError, Dataset, load_data, load_job_data, save_job_data, split_calibration

__all__ = ["DataError", "Dataset", "load_data", "load_job_data", "save_job_data", "split_calibration"]
