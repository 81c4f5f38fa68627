"""node1: the public API, input preprocessing, the embedding and the first half of the decoder layers."""
