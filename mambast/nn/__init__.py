"""Layers of Mamba-ST: SS2D (self and cross), VSS and ST blocks, patch embedding, CNN decoder."""

from .blocks import DropPath, PatchEmbed, STBlock, VSSBlock, cnn_decoder
from .ss2d import SS2D, CrossSS2D

__all__ = ["SS2D", "CrossSS2D", "VSSBlock", "STBlock", "PatchEmbed", "DropPath", "cnn_decoder"]
