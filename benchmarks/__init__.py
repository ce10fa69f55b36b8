"""Benchmarks: what masking, scoring and training cost, measured against references.

``python -m benchmarks`` (``make bench``) runs them all, prints a table and writes JSON to
``runs/bench/<timestamp>.json``. Modules:

* ``harness``: interleaved timing with warm-up and medians, the machine description, the table;
* ``reference``: the per-patch Python-loop patch score (the authors' way) and the whole-image
  augmentation, shared with the tests;
* ``scoring``: the patch-loss map against the loop; selective-mask generation against its floor;
* ``training_step``: a pretraining step, with the cost of masking and of MS-SSIM separated;
* ``data_pipeline``: decode + augment images/s against the training step's images/s, and one
  item's augmentation against the whole-image reference;
* ``memory``: peak memory of scoring a partition, and bytes per stored mask;
* ``end_to_end``: notebook and ``make test`` wall times, read from their logs;
* ``suite``: the profiles (``--quick``, default, ``--full``) and the command line.

Importing this package does no work; ``RESULTS.md`` records measured figures with date and machine.
"""
