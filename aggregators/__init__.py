"""Aggregation rules as TFF aggregation factories, and their name registry.

`AGGREGATORS.resolve("mean:weighted=false")` → resolved components (no TensorFlow);
`aggregators.build.build_aggregator(spec, context)` → a TFF aggregation factory. The training
algorithms that `--aggregator` also names (`fedlaw`, `pdmm`) are in `algorithms`.
"""

from aggregators.registry import AGGREGATORS, AggregatorContext

__all__ = ["AGGREGATORS", "AggregatorContext"]
