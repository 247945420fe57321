"""Sample-quality metrics that work offline and on small medical datasets.

One metric per module (frechet, kid, prdc, ssim, conditional, inception, bootstrap), the domain
feature space (domain: a small CNN trained on the real images), and `suite.MetricSuite`, which runs
them all for the training callback (ganlab.callbacks.metrics) and `python -m ganlab.evaluate`.
"""
