"""Physical models of the simulated channels: ambient weather and compressor operation."""
