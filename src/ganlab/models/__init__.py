"""GAN families (networks), their losses and the shared LightningModule."""
