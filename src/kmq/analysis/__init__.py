"""Measurements and reports: metrics (PSNR, SSIM, bits per pixel, ratios) and the `kmq analyze` comparisons and pages."""

from kmq.analysis.metrics import bits_per_pixel, compression_ratio, mse, psnr, ssim

__all__ = ["bits_per_pixel", "compression_ratio", "mse", "psnr", "ssim"]
