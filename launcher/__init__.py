"""Runs TwinTEE's processes on one machine for `make run`, the end-to-end tests and the benchmark."""
