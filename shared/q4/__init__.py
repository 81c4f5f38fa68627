"""The model's own 4-bit weights (TWINTEE_DTYPE=q4_1): GGUF blocks, and the kernel that multiplies by them."""
