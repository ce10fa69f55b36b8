"""smir_lib: the thin library behind the SMIR notebooks.

Selective Masking Image Reconstruction (SMIR) pretrains a CNN U-Net to rebuild images whose
*hardest* patches are hidden, as chosen by the model trained so far, and then fine-tunes it for
semantic segmentation. The method sits at the root of the package, where a reader looks first;
every other role has a folder named for it. The map:

The method (what the notebooks teach, and what the engine trains with)
    - ``patches``: the authors' patch grid, random patch masks, hiding pixels.
    - ``losses``: the reconstruction loss (L1 + 1 - MS-SSIM) and the per-patch loss map.
    - ``selective``: choosing the hardest patches with the current model (``selective_mask``),
      and the other masking strategies compared with it (``STRATEGIES``, ``choose_masks``).
    - ``models``: the ResNet U-Net with torchvision's names, and moving weights into it.
    - ``metrics``: the Jaccard loss, the confusion matrix and mIoU.

Its foundations (import nothing else from the kit)
    - ``runtime``: seeds and random streams, devices, the one mixed-precision policy.
    - ``files``: atomic writes and checked reads of torch and JSON files.

The folders
    - ``engine/``: runs that resume, on one CPU or many GPUs: ``config`` (the ``paper`` and
      ``fast`` presets), ``schedule``, ``train_loop``, ``checkpoint`` (run folders),
      ``distributed``, ``pretrain_data`` and ``pretrain`` (random and partitioned selective
      pretraining), ``finetune`` (and evaluation), ``inference`` (whole images, resized or in
      sliding windows), ``provenance`` (the commit a result came from).
    - ``data/``: every dataset behind ``get_dataset`` (``registry``), reading files (``base``),
      kornia transforms, views, your own folders (``folder``, ``folder_check``), tiles, and
      ``download`` (verified, resumable, atomic downloads of the real datasets and weights).
    - ``notebook/``: what the notebooks draw, measure and run: ``setup``, ``measure``,
      ``showcase``, ``trained``, ``zoo`` (the teaching models), ``plots``, ``widgets``, ``prose``
      (sentences filled from a run's metrics),
      ``runner`` and ``report`` (the series with papermill, ``make demo``).
    - ``study/``: the budget study (``plan``, ``run``, ``stats``, ``tables``, ``plots``,
      ``rerun``), the masking strategies' mechanism (``mechanism``), the reproduction study (``reproduction``, ``reproduction_report``), and the
      initialisations they compare (``inits``).
    - ``tools/``: the command line ``smir`` (``cli``), ``predict`` and ``export``.

Layers import downwards only: the method and its foundations import nothing from the folders;
``data`` imports the foundations; ``engine`` the method and ``data``; ``notebook``, ``study``
and ``tools`` the layers below them (tests/test_layout.py checks that there is no import cycle).
Importing the package does no work.
"""

__version__ = "0.1.0"
