"""Cells that several test files run in the shell."""

# A regressor, a LightningModule with its own data, a DataModule, and the dataset they use.
DEFINITIONS = '''
import torch
import lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset


class Regressor(pl.LightningModule):
    def __init__(self, lr=0.05):
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)
        self.lr = lr

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class WithOwnData(Regressor):
    def train_dataloader(self):
        return DataLoader(dataset, batch_size=16)


class Data(pl.LightningDataModule):
    def train_dataloader(self):
        return DataLoader(dataset, batch_size=16)

    def val_dataloader(self):
        return DataLoader(dataset, batch_size=32)


generator = torch.Generator().manual_seed(0)
X = torch.randn(128, 8, generator=generator)
dataset = TensorDataset(X, X.sum(1, keepdim=True))
'''
