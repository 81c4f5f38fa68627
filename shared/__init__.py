"""Code both nodes run: config, wire format, sealing, model functions, the release step."""
