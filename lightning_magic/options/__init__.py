"""What a ``%%lightning_train`` line asks for, and what it comes to on this machine.

The rule of this folder: it decides, before anything runs, what a run will use; it never forks,
never imports torch at module level and never initializes CUDA (device counts come from NVML,
through ``readings``, mapped to ``CUDA_VISIBLE_DEVICES``). A bad value is a one-line
``UsageError`` that names the flag, repeats the value and says what is allowed.

- ``flags``: the declarations (``%%lightning_train?``) and ``TrainFlags``, the parsed line;
  ``values``: one check per kind of value; ``words``: reading the line's words and naming
  those no parser took; ``combinations``: flags that do not go
  together; ``names``: Lightning's one spelling of accelerators
  and precisions.
- ``devices``: the GPUs this kernel may use, in CUDA's order, and what ``--devices`` selects;
  ``hardware``: devices, accelerator, precision and strategy resolved against them.
"""
