"""Classification metrics with numpy only (no scikit-learn dependency)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """[true, predicted] counts."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def f1_per_class(cm: np.ndarray) -> np.ndarray:
    tp = np.diag(cm).astype(np.float64)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    denom = predicted + actual
    # A class never predicted and never present has no defined F1; 0 as scikit-learn does.
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def classification_metrics(y_true, y_pred, class_names) -> dict:
    """accuracy, weighted and macro F1, per-class F1 (by name), confusion matrix (nested lists)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    cm = confusion_matrix(y_true, y_pred, len(class_names))
    f1 = f1_per_class(cm)
    support = cm.sum(axis=1)
    total = max(int(support.sum()), 1)
    return {
        "num_samples": int(len(y_true)),
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else 0.0,
        "f1_weighted": float((f1 * support).sum() / total),
        "f1_macro": float(f1.mean()),
        "f1_per_class": {name: float(v) for name, v in zip(class_names, f1)},
        "support": {name: int(v) for name, v in zip(class_names, support)},
        "confusion_matrix": cm.tolist(),
    }
