"""gb28181gw: a GB/T 28181 signalling gateway and device registrar."""

__version__ = "0.1.0"
