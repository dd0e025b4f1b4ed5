"""mutator: OPA Gatekeeper's admission resources, run by a Python admission controller."""

__version__ = "0.1.0"
