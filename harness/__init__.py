"""What the tests and the benchmarks share: programs started on loopback, free ports,
their HTTP API, /proc figures, waiting and sampling, and hostile input.

Not part of the product: it is neither packaged nor copied into the image.
"""
