"""Image processor lookup for FLMR checkpoints (CLIP preprocessing).

The PIL implementation of transformers' CLIP processor is used for local files because it
reproduces the pixel values of the transformers 4.37 processor the checkpoints were evaluated
with (checked on the preflmr-tiny fixture images) and needs no torchvision.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .configuration_flmr import FLMRConfig

logger = logging.getLogger(__name__)

# OpenAI CLIP normalisation constants (the LAION bigG tower uses the same values).
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"


def clip_image_processor(image_size: int) -> Any:
    """Build CLIP preprocessing for ``image_size`` pixels: RGB, shortest side resized (bicubic),
    center crop, rescale by 1/255, CLIP mean and standard deviation."""
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(
        do_resize=True,
        size={"shortest_edge": image_size},
        resample=3,
        do_center_crop=True,
        crop_size={"height": image_size, "width": image_size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        do_convert_rgb=True,
    )


def load_image_processor(folder_or_id: str | os.PathLike | None, config: FLMRConfig) -> Any:
    """Return the image processor for a checkpoint.

    The first that works: the folder's ``preprocessor_config.json``, then
    ``AutoImageProcessor.from_pretrained(config.vision_model_version)`` (the hub, or its cache).
    When both fail (for example offline), a warning is logged and a CLIP processor is built for
    ``config.vision_config.image_size`` with CLIP mean and standard deviation.
    """
    if folder_or_id is not None and (Path(folder_or_id) / PREPROCESSOR_CONFIG_NAME).is_file():
        from transformers import CLIPImageProcessorPil

        return CLIPImageProcessorPil.from_pretrained(str(folder_or_id))

    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(config.vision_model_version)
    except (OSError, ValueError) as error:
        logger.warning(
            "could not load the image processor of %r (%s); using CLIP preprocessing for %d-pixel images",
            config.vision_model_version,
            error,
            config.vision_config.image_size,
        )
    return clip_image_processor(config.vision_config.image_size)
