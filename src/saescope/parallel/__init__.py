"""Running long jobs on several processes with ``torch.distributed`` (launched by ``torchrun``).

``context`` finds the rank and world size ``torchrun`` set and starts the process group (gloo on
CPU, NCCL on CUDA); ``collectives`` gathers fixed-shape state from every rank; ``launch`` starts
``torchrun`` for the ``--workers N`` option of the CLI.
"""
