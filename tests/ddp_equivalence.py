"""Run by tests/test_ddp.py as `python ddp_equivalence.py <processes> <out.pt>`: one D+G step of a real
GANModule under GANStrategy on <processes> CPU processes (gloo), from fixed weights, on a fixed global
batch of N images with fixed per-sample noise; rank 0 saves G's and D's weights before and after.

Lightning gives rank r the images r, r + P, r + 2P, ... (DistributedSampler without shuffling): every
rank holds N / P of the same N images that one process sees as a single batch. Each image's index
travels as its (unused, unconditional) label, and the noise is looked up by that index, so every
sample meets the same z wherever it lands.
"""
from __future__ import annotations

import sys

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ganlab.models.dcgan import DCGANDiscriminator, DCGANGenerator
from ganlab.models.gan_module import GANModule
from ganlab.strategy import GANStrategy

N, LATENT = 8, 8
Z = torch.randn(2, N, LATENT, generator=torch.Generator().manual_seed(1))  # [D step, G step] noise per sample


def without_batchnorm(net: nn.Module) -> nn.Module:
    """BatchNorm in train mode normalises with the statistics of each process's own batch, so P x B
    is not 1 x PB through it (see test_ddp.py); the equivalence is tested on the other layers."""
    for name, child in net.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(net, name, nn.Identity())
        else:
            without_batchnorm(child)
    return net


class PerSampleNoise(GANModule):
    def training_step(self, batch, batch_idx):
        self._index, self._draws = batch[1], 0
        return super().training_step(batch, batch_idx)

    def noise(self, n: int) -> torch.Tensor:
        z = Z[self._draws][self._index.cpu()]
        self._draws += 1
        return z.to(self.device)

    def configure_optimizers(self):
        # Adam's step does not change when every gradient is scaled (a summed all-reduce would pass);
        # plain SGD moves each weight by lr x gradient, so a wrong scale shows.
        return torch.optim.SGD(self.generator.parameters(), lr=0.5), torch.optim.SGD(self.discriminator.parameters(), lr=0.5)


def weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if k.startswith(("generator.", "discriminator."))}


def main(processes: int, out: str) -> None:
    torch.manual_seed(0)
    model = PerSampleNoise(without_batchnorm(DCGANGenerator(latent_dim=LATENT, image_size=32, width=8)),
                           DCGANDiscriminator(image_size=32, width=8, spectral_norm=True), ema_decay=None)
    before = weights(model)
    images = torch.rand(N, 1, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    loader = DataLoader(TensorDataset(images, torch.arange(N)), batch_size=N // processes, shuffle=False)
    trainer = L.Trainer(strategy=GANStrategy(), accelerator="cpu", devices=processes, max_epochs=1,
                        limit_train_batches=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(model, loader)
    if trainer.global_rank == 0:
        torch.save({"before": before, "after": weights(model), "world_size": trainer.world_size,
                    "global_step": trainer.global_step}, out)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
