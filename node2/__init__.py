"""node2: the second half of the decoder layers, the final norm, the lm_head and token generation."""
