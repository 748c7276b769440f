"""Pure transforms over batches (normalise, cost, ...): no I/O, no calls to the next stage.

Batches come from the receivers' decode step; the pipeline passes each processor's output on.
"""
