"""Sparse autoencoders: the SAELens / GemmaScope file layouts (JumpReLU, TopK, ReLU) and our TopK trainer."""
