"""The ATFT-GAT-FAN model: blocks (grn, vsn, adaptive_norm, tft, gat, fusion, heads) and assembly."""

from atft.model.atft_gat_fan import ATFT_GAT_FAN

__all__ = ["ATFT_GAT_FAN"]
