"""Weight-only post-training quantization (int8 per channel, int4 per group; round-to-nearest or
GPTQ) and its CPU matmul kernels. ``quant.model`` quantizes, saves and loads; the engine runs the
result through the same Transformer."""
