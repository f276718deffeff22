"""Windowed aggregations, independent of storage: order-independent accumulators with exact
sums, the layout of their states, direct evaluation and the sliding backfill sweep, and tiles
(partial aggregates of one hop). Offline evaluation, online tiles, pushes and lookups all call
this package, so the same events give the same bits on every path.

Imports definitions/, values/ and plan/ (for AggregatePlan); never offline/, online/ or any
storage library."""
