"""Mistakes in the model's math: shapes, devices of labels, losses without gradients, NaN losses."""

from __future__ import annotations

import re

from .clues import GRADIENT_CLIP_FLAG, PRECISION_FLAG, Clues
from .frames import calling_frames, describe_frame
from .report import Report

# A line that gives a tensor a new shape on its way: a slice, or a reshaping method.
_RESHAPES = re.compile(r"\[[^\]]*:[^\]]*\]|\.\s*(view|reshape|flatten|narrow|squeeze|unsqueeze|"
                       r"permute|transpose|chunk|split|expand)\s*\(")

_NON_FINITE = re.compile(
    r"non-?finite|not finite|returned nan values|nan and/or inf"
    r"|\bloss\b[^\n]*\b(nan|inf)\b|\b(nan|inf)\b[^\n]*\bloss\b",
    re.IGNORECASE,
)


def non_finite_loss(c: Clues) -> Report | None:
    if not (c.is_exception("NonFiniteLoss") or _NON_FINITE.search(c.text)):
        return None
    what = c.raised() + "\nA value became NaN or infinite, so training cannot continue from it."
    steps = []
    lr = c.value("learning_rate")
    steps.append(f"Lower the learning rate (now {lr}), for example by 10×." if isinstance(lr, (int, float))
                 else "Lower the learning rate, for example by 10×.")
    steps.append(f"Clip gradients: `{GRADIENT_CLIP_FLAG} 1.0`.")
    precision = c.precision or ""
    if precision.startswith("16"):
        steps.append(f"float16 overflows above 65504 (you use `precision={precision!r}`): switch to "
                     f"`{PRECISION_FLAG} bf16-mixed` on Ampere or newer GPUs, or `{PRECISION_FLAG} 32`.")
    elif precision.startswith("bf16-true"):
        steps.append(f"Pure bfloat16 weights lose small updates (you use `precision={precision!r}`): try "
                     f"`{PRECISION_FLAG} bf16-mixed`.")
    steps += [
        "Check the inputs for NaN/inf: `assert torch.isfinite(x).all()` at the start of `training_step`.",
        "Look for `log(0)`, division by zero or `sqrt` of negatives: clamp (`x.clamp_min(1e-8)`) or use stable "
        "losses such as `F.binary_cross_entropy_with_logits` and `F.cross_entropy` on raw logits.",
        "Find the operation that produced the first NaN: compute the loss inside "
        "`with torch.autograd.detect_anomaly():` in `training_step`.",
    ]
    if c.place:
        steps.insert(0, f"It was detected at {c.place}: check the values that flow into it.")
    return Report("non_finite_loss", f"Loss is NaN or infinite{c.on_rank}", what, steps, c.failure.traceback)


def loss_without_grad(c: Clues) -> Report | None:
    if not c.has("does not require grad and does not have a grad_fn"):
        return None
    what = c.raised() + "\nThe loss is not connected to any trainable parameter, so there is nothing to backpropagate."
    steps = [
        "Return the loss tensor itself from `training_step`: not `loss.item()`, `loss.detach()`, or a value "
        "computed with NumPy.",
        "Do not compute the loss under `torch.no_grad()` or `torch.inference_mode()`.",
        "Check that some parameters are trainable: a model frozen with `requires_grad_(False)` has nothing to train.",
    ]
    return Report("loss_without_grad", f"Loss has no gradient{c.on_rank}", what, steps, c.failure.traceback)


def label_out_of_range(c: Clues) -> Report | None:
    target = c.search(r"Target (-?\d+) is out of bounds")
    if not (target or c.has("index out of range in self")):
        return None
    what = c.raised()
    if target:
        what += f"\nA class label ({target.group(1)}) is outside 0 … number of classes - 1 of the model's output."
        steps = [
            "Make the output layer as wide as the number of classes (labels run from 0 to num_classes - 1).",
            "Check the labels: `y.min()`, `y.max()`; labels starting at 1 need `y - 1`.",
        ]
    else:
        what += "\nAn index passed to an embedding (or `index_select`) is larger than its table."
        steps = [
            "Make `num_embeddings` larger than the largest index (for tokens: the tokenizer's vocabulary size).",
            "Check the indices: `x.min()`, `x.max()`.",
        ]
    return Report("label_out_of_range", f"Index out of range{c.on_rank}", what, steps, c.failure.traceback)


def shape_mismatch(c: Clues) -> Report | None:
    matmul = c.search(r"mat1 and mat2 shapes cannot be multiplied \((\d+)x(\d+) and (\d+)x(\d+)\)")
    broadcast = c.search(
        r"The size of tensor a \((\d+)\) must match the size of tensor b \((\d+)\) at non-singleton dimension (\d+)"
    )
    batch = c.search(r"Expected input batch_size \((\d+)\) to match target batch_size \((\d+)\)")
    channels = c.search(r"expected input\[(.+?)\] to have (\d+) channels, but got (\d+) channels instead")
    view = c.search(r"shape '\[(.+?)\]' is invalid for input of size (\d+)")
    stack = c.has("stack expects each tensor to be equal size")
    if not (matmul or broadcast or batch or channels or view or stack or c.has("size mismatch")):
        return None
    what = c.raised()
    steps = []
    origin, caller = _origin(c)
    if origin != "here":  # the values came from the caller's code: no resized layer is right
        what += (f"\nThe values came from {caller}, which slices or reshapes them before passing "
                 "them on." if origin == "caller" else
                 f"\nThe values came from {caller}, another cell or file: the wrong shape may "
                 "come from there or from the layer.")
        matmul = channels = None
    if matmul:
        rows, got, expected, out = matmul.groups()
        what += f"\nA linear layer expects {expected} input features, but its input has {got}."
        steps.append(f"Make the layer match its input: `nn.Linear({got}, {out})`, or use `nn.LazyLinear({out})`, "
                     "which infers the input size. If the input is an image batch, flatten it first: `x.flatten(1)`.")
    elif broadcast:
        what += (f"\nTwo tensors have sizes {broadcast.group(1)} and {broadcast.group(2)} in dimension "
                 f"{broadcast.group(3)}.")
        steps.append("A loss between shapes like `[N, 1]` and `[N]` causes this: use `y_hat.squeeze(-1)` or "
                     "`y.view_as(y_hat)` so prediction and target have the same shape.")
    elif batch:
        what += f"\nThe model produced {batch.group(1)} predictions for {batch.group(2)} labels."
        steps.append("A reshape merged or split samples: use `x.flatten(1)` or `x.view(x.size(0), -1)` instead of "
                     "`x.view(-1, …)`.")
    elif channels:
        what += f"\nA convolution expects {channels.group(2)} input channels but got {channels.group(3)}."
        steps.append(f"Set the layer's `in_channels={channels.group(3)}`, or convert the images (grayscale vs RGB).")
    elif view:
        what += f"\nA `view`/`reshape` to [{view.group(1)}] does not fit a tensor of {view.group(2)} elements."
        steps.append("Compute the shape from the input instead of hard-coding it: `x.view(x.size(0), -1)`.")
    elif stack:
        what += "\nThe samples of a batch have different shapes."
        steps.append("Resize samples to one shape in the Dataset, or pad them in a `collate_fn` (for example "
                     "with `torch.nn.utils.rnn.pad_sequence`).")
    if origin == "caller":
        steps.insert(0, f"Look at {caller}: its slice or reshape gives the input the shape "
                        f"{c.place or 'the failing line'} cannot take. Print the shapes before and "
                        "after it (`print(x.shape)`), and slice so that the shape stays what the "
                        "layer was built for.")
    elif origin == "unsure":
        steps.insert(0, f"Look at both {caller} and {c.place}: print the shapes of the tensors "
                        "at each (`print(x.shape)`) to see which one gives them the wrong shape; "
                        "fix the code that made them, or the layer if it was built too small.")
    elif c.place:
        steps.insert(0, f"Look at {c.place}: print the shapes of its tensors just before it (`print(x.shape)`).")
    return Report("shape_mismatch", f"Shape mismatch{c.on_rank}", what, steps, c.failure.traceback)


def _origin(c: Clues) -> tuple[str, str | None]:
    """Where the values of a shape mismatch came from: ``("here", None)`` when the failing line
    is the place to look; ``("caller", place)`` when the user's code that called it slices or
    reshapes them on that line; ``("unsure", place)`` when it called from another cell or file,
    so the shapes may be wrong in either."""
    frames = calling_frames(c.failure.traceback)
    if len(frames) < 2 or c.frame is None or tuple(frames[-1][:2]) != tuple(c.frame[:2]):
        return "here", None
    inner, outer = frames[-1], frames[-2]
    if _RESHAPES.search(inner[2] or ""):
        return "here", None
    if _RESHAPES.search(outer[2] or ""):
        return "caller", describe_frame(outer)
    if outer[0] != inner[0]:
        return "unsure", describe_frame(outer)
    return "here", None


RULES = (loss_without_grad, label_out_of_range, shape_mismatch, non_finite_loss)
