"""smir_lib: the thin library behind the SMIR notebooks.

Selective Masking Image Reconstruction (SMIR) pretrains a CNN U-Net to rebuild images whose
*hardest* patches are hidden, as chosen by the model trained so far, and then fine-tunes it for
semantic segmentation. Each module is short and teaches one idea. The map, in four groups:

The method (what the notebooks teach, and what the engine trains with)
    - ``patches``: the authors' patch grid, random patch masks, hiding pixels.
    - ``losses``: the reconstruction loss (L1 + 1 - MS-SSIM) and the per-patch loss map.
    - ``selective``: choosing the hardest patches with the current model (``selective_mask``).
    - ``models``: the ResNet U-Net with torchvision's names, and moving weights into it.

The engine (training runs that resume, on one CPU or many GPUs)
    - ``config``: one typed configuration with the ``paper`` and ``fast`` presets.
    - ``runtime``: seeds, devices and the one mixed-precision policy.
    - ``schedule``: Adam with linear warm-up and cosine decay.
    - ``train_loop``: one resumable training loop for every stage.
    - ``pretrain_data``: the pool, its partitions, scoring a partition, the stored masks.
    - ``pretrain``: random-masking and partitioned selective pretraining.
    - ``metrics`` / ``finetune``: the Jaccard loss and mIoU; fine-tuning and evaluation.
    - ``checkpoint`` / ``distributed``: atomic run files; torchrun and DDP.
    - ``cli`` (``python -m smir_lib``): pretrain, finetune and evaluate from the shell.
    - ``inference``: whole images, resized (the paper) or in sliding windows at full resolution.
    - ``predict`` / ``export``: segment a folder of images; write the network for other tools.

The data (every dataset behind one entry point)
    - ``data.registry`` (``get_dataset``) with one module per dataset (``data.synthetic``,
      ``data.cwfid``, ``data.voc``, ``data.cityscapes``, ``data.nassar``, ``data.sugarbeets``).
    - ``data.base``: reading image and label files with errors that say how to fix them.
    - ``data.transforms``: kornia augmentation and the evaluation transforms.
    - ``data.views``: first-n, in-memory (``cache_images``) and resized views of a dataset.
    - ``data.folder`` / ``data.folder_check``: your own images and labels, checked; ``data.tiles``:
      a pool tiled from large images.
    - ``download``: verified, resumable, atomic downloads of the real datasets and weights.

Notebook support (what the notebooks draw, measure and run)
    - ``notebook_setup``: parameters, run folders, the version report, the data check.
    - ``measure``: class shares, hidden-pixel shares, batch loading, the MAE-style views.
    - ``trained``: "found a trained model, loading it", or train it now.
    - ``showcase``: the data behind the paper's figures; ``zoo``: the teaching models.
    - ``plots`` / ``widgets``: static figures and the JupyterLab explorers; ``study_plots``: the
      budget study's figures.
    - ``study`` / ``study_report``: the reproduction study loop and its report.
    - ``study_plan`` / ``study_run`` / ``study_stats`` / ``study_tables`` / ``study_rerun``: the
      budget study (issue 15): its work units, the resumable sharded scheduler, paired bootstrap
      intervals, the report, one committed cell rerun.
    - ``provenance``: the commit (and whether its code had changes) a report or model came from.
    - ``runner`` / ``report``: the notebook series with papermill and its summary report.

Importing the package does no work: submodules are imported where they are used.
"""

__version__ = "0.1.0"
