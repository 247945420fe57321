"""GAN families (networks), their losses and the shared LightningModule.

The family contract (README, "Extending ganlab"): the generator has `latent_dim` and
`forward(z, labels=None)` -> (N, C, H, W) images in [-1, 1]; the discriminator's
`forward(x, labels=None)` returns 1-D logits (N,), no sigmoid; conditional networks both carry
`num_classes` (>= 1, the module's `num_classes`), unconditional ones have none (or 0) and ignore labels.
"""
