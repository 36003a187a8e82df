"""What the vllm engine sends its workers, checked without vLLM: each distinct direction once, by content, and
each row's index into that table (-1 for a row with nothing to add)."""

from __future__ import annotations

import numpy as np

from axwarehouse.steering.rows import GenRow
from axwarehouse.steering.vllm_engine import _direction_table


def test_the_direction_table_holds_each_direction_once():
    a = np.array([1.0, 0.0, 0.0], np.float32)
    b = np.array([0.0, 1.0, 0.0], np.float64)
    a_copy = a.copy()  # the same direction in another array
    rows = [GenRow((1,), a, 2.0), GenRow((1,), None, 0.0), GenRow((2,), b, 1.0), GenRow((3,), a_copy, 0.5),
            GenRow((4,), a, 0.0), GenRow((5,), b, -3.0)]
    table, which = _direction_table(rows)
    assert which == [0, -1, 1, 0, -1, 1]
    assert table.dtype == np.float32
    np.testing.assert_array_equal(table, np.stack([a, b.astype(np.float32)]))


def test_no_steered_row_gives_no_table():
    assert _direction_table([GenRow((1,), None, 0.0)]) == (None, [-1])
