"""kseg: Kaggle segmentation competitions from train.csv to an offline submission kernel.

segmentation-models 1.0.1 only works on Keras 2, so the legacy tf-keras must be selected
before TensorFlow is first imported anywhere in the process. Importing ``kseg`` does that
and nothing else heavy: the numeric core (rle, metric, folds, submission) never imports TensorFlow.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
