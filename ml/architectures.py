"""The names of the segmentation architectures (``ml.model`` builds them).

Kept apart from ``ml.model`` so that configuration (``TrainingConfig``) can name an architecture
without importing torch: the Dagster code location loads without it.
"""

LRASPP = "lraspp_mobilenet_v3_large"
UNET = "unet_mobilenet_v3_large"
UNET_SMALL = "unet_small"
ARCHITECTURES = (UNET, LRASPP, UNET_SMALL)
