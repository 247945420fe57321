"""The downstream-utility benchmark's parts (ganlab.augment wires them): regimes (which images each
training set holds) and paired (paired differences to the strongest baseline, with CIs)."""
