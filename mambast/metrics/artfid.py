"""ArtFID (Wright & Ommer 2022): one number that rewards both style fidelity and content preservation.

ArtFID = (1 + LPIPS) * (1 + FID); lower is better.
"""

from __future__ import annotations


def art_fid(fid: float, lpips: float) -> float:
    """(1 + lpips) * (1 + fid) for a mean LPIPS and a FID (both >= 0)."""
    if fid < 0 or lpips < 0:
        raise ValueError(f"fid and lpips must be >= 0; got fid={fid}, lpips={lpips}")
    return (1.0 + float(lpips)) * (1.0 + float(fid))
