"""stocksync: keeps Forstok stock equal to Accurate Online stock."""

__version__ = "0.1.0"
