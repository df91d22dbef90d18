"""gb28181gw: a GB/T 28181 signalling gateway and device registrar."""

__version__ = "0.1.0"

# The hot path compiled by `gb28181gw accelerate`, if it was built from exactly these sources
# (otherwise nothing changes): see gb28181gw/compiled.py.
from gb28181gw import compiled as _compiled  # noqa: E402

_compiled.install()
