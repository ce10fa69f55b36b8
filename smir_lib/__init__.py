"""smir_lib: the thin library behind the SMIR notebooks.

Selective Masking Image Reconstruction (SMIR) pretrains a CNN U-Net to rebuild images whose
*hardest* patches are hidden, as chosen by the model trained so far, and then fine-tunes it for
semantic segmentation. Each module is short and teaches one idea:

- ``patches``: the patch grid, random masks, hiding pixels;
- ``losses``: the reconstruction loss and the per-patch loss map;
- ``selective``: choosing the hardest patches with the current model;
- ``models``: the ResNet U-Net;
- ``data``: datasets, transforms and the synthetic field images;
- ``pretrain`` / ``finetune`` / ``metrics``: the training engine;
- ``plots`` / ``widgets`` / ``report``: what the notebooks draw.

Importing the package does no work: submodules are imported where they are used.
"""

__version__ = "0.1.0"
