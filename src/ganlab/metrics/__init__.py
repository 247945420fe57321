"""Sample-quality metrics that work offline and on small medical datasets.

The computations, one per module (frechet, kid, prdc, ssim, conditional, inception, bootstrap), the
feature spaces (domain: a small CNN trained on the real images; inception), the metric families that
report them (families/, one file each, listed in conf/metrics/*.yaml), the protocol they follow
(protocol.py: prepare / update / results, the shared Context) and `suite.MetricSuite`, which runs the
listed families for the training callback (ganlab.callbacks.metrics) and `python -m ganlab.evaluate`.
"""
