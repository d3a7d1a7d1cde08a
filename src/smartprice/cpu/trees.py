"""LightGBM's fitted trees as flat arrays, evaluated with numpy: all trees step together, one level a step.

Predicting then needs neither LightGBM nor its import (~1 s with scikit-learn, which it imports),
and one listing costs a few hundred microseconds with no per-call thread start-up. The arrays come
from LightGBM's own model dump, and tests check that the sums equal `Booster.predict` (to 1e-9).
Only numerical `<=` splits occur in the CPU model (no categorical features).
"""

from __future__ import annotations

from typing import Any

import numpy as np

ROWS_PER_STEP = 2048  # rows evaluated together: (rows x trees) index arrays stay in cache

MISSING_NONE, MISSING_ZERO, MISSING_NAN = 0, 1, 2
_MISSING = {"None": MISSING_NONE, "Zero": MISSING_ZERO, "NaN": MISSING_NAN}


class TreeArrays:
    """`predict(X)` = sum over trees of the leaf each row reaches (LightGBM's raw score)."""

    FIELDS = ("feature", "threshold", "left", "right", "default_left", "missing", "leaf_value", "depth")

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        for name in self.FIELDS:
            setattr(self, name, arrays[name])
        self.n_trees = self.leaf_value.shape[0]

    @classmethod
    def from_booster(cls, booster: Any) -> TreeArrays:
        """Flatten a fitted `lightgbm.Booster` (internal nodes 0.., a child < 0 is leaf ~child)."""
        trees = [info["tree_structure"] for info in booster.dump_model()["tree_info"]]
        leaves = max(1, max(_leaves(tree) for tree in trees))
        nodes = max(1, leaves - 1)
        shape = (len(trees), nodes)
        arrays = {"feature": np.zeros(shape, np.int32), "threshold": np.zeros(shape, np.float64),
                  "left": np.full(shape, -1, np.int32), "right": np.full(shape, -1, np.int32),
                  "default_left": np.zeros(shape, bool), "missing": np.zeros(shape, np.int8),
                  "leaf_value": np.zeros((len(trees), leaves), np.float64), "depth": np.zeros(1, np.int32)}
        depth = 1
        for t, root in enumerate(trees):
            if "split_index" not in root:  # a tree of one leaf: node 0 sends both ways to leaf 0 (children -1 = ~0)
                arrays["leaf_value"][t, 0] = root["leaf_value"]
                continue
            stack = [(root, 1)]
            while stack:
                node, level = stack.pop()
                depth = max(depth, level)
                i = node["split_index"]
                if node.get("decision_type", "<=") != "<=":
                    raise ValueError("categorical splits are not supported by TreeArrays")
                arrays["feature"][t, i] = node["split_feature"]
                arrays["threshold"][t, i] = node["threshold"]
                arrays["default_left"][t, i] = node["default_left"]
                arrays["missing"][t, i] = _MISSING[node["missing_type"]]
                for side in ("left", "right"):
                    child = node[f"{side}_child"]
                    if "split_index" in child:
                        arrays[side][t, i] = child["split_index"]
                        stack.append((child, level + 1))
                    else:
                        arrays[side][t, i] = ~child["leaf_index"]
                        arrays["leaf_value"][t, child["leaf_index"]] = child["leaf_value"]
        arrays["depth"][0] = depth
        return cls(arrays)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Named arrays for an npz file."""
        return {f"tree_{name}": getattr(self, name) for name in self.FIELDS}

    @classmethod
    def from_arrays(cls, arrays: Any) -> TreeArrays:
        return cls({name: arrays[f"tree_{name}"] for name in cls.FIELDS})

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Raw scores (n,) of rows of `features` (n, columns), float64."""
        features = np.asarray(features, dtype=np.float64)
        out = np.empty(len(features))
        for start in range(0, len(features), ROWS_PER_STEP):
            out[start:start + ROWS_PER_STEP] = self._predict(features[start:start + ROWS_PER_STEP])
        return out

    def _predict(self, x: np.ndarray) -> np.ndarray:
        n, trees = len(x), self.n_trees
        tree = np.arange(trees)[None, :]          # (1, T)
        row = np.arange(n)[:, None]               # (n, 1)
        node = np.zeros((n, trees), dtype=np.int32)  # (n, T): current internal node, ~leaf once reached
        for _ in range(int(self.depth[0])):
            active = node >= 0
            if not active.any():
                break
            current = np.where(active, node, 0)
            value = x[row, self.feature[tree, current]]  # (n, T)
            go_left = value <= self.threshold[tree, current]
            missing = self.missing[tree, current]
            if (missing != MISSING_NONE).any():
                is_nan = np.isnan(value)
                absent = np.where(missing == MISSING_NAN, is_nan,
                                  np.where(missing == MISSING_ZERO, is_nan | (value == 0), False))
                go_left = np.where(absent, self.default_left[tree, current], go_left)
            else:  # missing type None: LightGBM reads NaN as 0
                go_left = np.where(np.isnan(value), 0.0 <= self.threshold[tree, current], go_left)
            step = np.where(go_left, self.left[tree, current], self.right[tree, current])
            node = np.where(active, step, node)
        return self.leaf_value[tree, ~node].sum(axis=1)


def _leaves(node: dict[str, Any]) -> int:
    """Leaves under a dumped tree node."""
    if "split_index" not in node:
        return 1
    return _leaves(node["left_child"]) + _leaves(node["right_child"])
