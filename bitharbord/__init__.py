"""BitHarbor daemon: reconciles harbor.yaml into a running media appliance."""

__version__ = "0.1.0"
