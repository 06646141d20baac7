"""Code that tests run in real kernels."""

# Run in a kernel: a module that trains until stopped, and tells the test through a FIFO once
# rank 0 is training (an event to wait on, instead of a sleep).
ENDLESS_SETUP = r'''
%load_ext lightning_magic
import os, torch
import lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset


class Endless(pl.LightningModule):
    """Tells the test (through a FIFO) when rank 0 is training, then keeps training."""

    def __init__(self, fifo=None):
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)
        self.fifo = fifo

    def training_step(self, batch, batch_idx):
        if self.fifo and self.global_rank == 0 and self.global_step == 3:
            with open(self.fifo, "w") as signal_test:
                signal_test.write("training\n")
            self.fifo = None
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


X = torch.randn(512, 8)
loader = DataLoader(TensorDataset(X, X.sum(1, keepdim=True)), batch_size=4)
'''

# Run in a kernel: Endless with a validation step, on data of its own (256 samples, batch 8);
# ENDLESS starts a background run of it that trains until stopped.
BEACON_SETUP = ENDLESS_SETUP + r'''

class Beacon(Endless):
    """Writes "training" to a FIFO (once) when rank 0 reaches step 3, then trains on."""

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))


X = torch.randn(256, 8)
loader = DataLoader(TensorDataset(X, X.sum(1, keepdim=True)), batch_size=8)
'''

ENDLESS = "%%lightning_train --background --accelerator cpu --devices 2 --max-epochs 1000"
