"""notsale: a flash-sale service that sells exactly what it has."""

__version__ = "0.1.0"
