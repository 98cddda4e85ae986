"""The comparison the Triton kernels' tests share."""


def rel_err(x, ref) -> float:
    """Largest absolute difference relative to the largest magnitude of the reference (in float32)."""
    return ((x.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-30)).item()
