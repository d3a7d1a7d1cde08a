"""LightGBM's fitted trees as flat arrays, evaluated with numpy: all trees step together, one level a step.

Predicting then needs neither LightGBM nor its import (~1 s with scikit-learn, which it imports),
and one listing costs a few hundred microseconds with no per-call thread start-up. The arrays come
from LightGBM's own model dump, and tests check that the sums equal `Booster.predict` (to 1e-9).
Only numerical `<=` splits occur in the CPU model (no categorical features).
"""

from __future__ import annotations

from typing import Any

import numpy as np

ROWS_PER_STEP = 256  # rows evaluated together: their (rows x trees) index arrays stay in cache

MISSING_NONE, MISSING_ZERO, MISSING_NAN = 0, 1, 2
_MISSING = {"None": MISSING_NONE, "Zero": MISSING_ZERO, "NaN": MISSING_NAN}


class TreeArrays:
    """`predict(X)` = sum over trees of the leaf each row reaches (LightGBM's raw score)."""

    FIELDS = ("feature", "threshold", "left", "right", "default_left", "missing", "leaf_value", "depth")

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        for name in self.FIELDS:
            setattr(self, name, arrays[name])
        self.n_trees = self.leaf_value.shape[0]
        self._child: np.ndarray | None = None  # flat arrays made on first predict

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
        """Every (row, tree) pair walks down one level a step; pairs that reach a leaf add its value and drop out."""
        n, trees = x.shape[0], self.n_trees
        nodes, leaves, columns = self.feature.shape[1], self.leaf_value.shape[1], x.shape[1]
        if self._child is None:
            self._prepare()
        any_missing = bool((self.missing != MISSING_NONE).any())
        if not any_missing:
            x = np.nan_to_num(x, nan=0.0)  # missing type None: LightGBM reads NaN as 0
        flat_x = x.ravel()
        tree = np.tile(np.arange(trees, dtype=np.int32), n)       # (n*T,) the pair's tree
        row = np.repeat(np.arange(n, dtype=np.int32), trees)       # (n*T,) the pair's row
        node = tree * np.int32(nodes)                              # flat index of the current node
        out = np.zeros(n)
        for _ in range(int(self.depth[0])):
            value = flat_x[row * np.int32(columns) + self._feature[node]]
            right = ~(value <= self._threshold[node])
            if any_missing:
                kind = self._missing[node]
                absent = np.where(kind == MISSING_NAN, np.isnan(value),
                                  np.where(kind == MISSING_ZERO, np.isnan(value) | (value == 0), False))
                right = np.where(absent, ~self._default_left[node], right)
            step = self._child[2 * node + right]
            done = step < 0
            out += np.bincount(row[done], weights=self._leaf_value[tree[done] * np.int32(leaves) + ~step[done]], minlength=n)
            keep = ~done
            if not keep.any():
                break
            tree, row = tree[keep], row[keep]
            node = tree * np.int32(nodes) + step[keep]
        return out

    def _prepare(self) -> None:
        """Flat arrays for `_predict`: children interleaved (left, right) so one gather picks the branch."""
        self._feature = self.feature.ravel().astype(np.int32)
        self._threshold = self.threshold.ravel()
        self._child = np.stack([self.left.ravel(), self.right.ravel()], axis=1).ravel().astype(np.int32)
        self._missing, self._default_left = self.missing.ravel(), self.default_left.ravel()
        self._leaf_value = self.leaf_value.ravel()


def _leaves(node: dict[str, Any]) -> int:
    """Leaves under a dumped tree node."""
    if "split_index" not in node:
        return 1
    return _leaves(node["left_child"]) + _leaves(node["right_child"])
