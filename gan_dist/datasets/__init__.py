"""Private helpers of `gan_dist.data` (one module per kind of source, and the in-graph image operations).

Import `gan_dist.data`, never these modules: their names and signatures may change with the data layer.
"""
