"""Klaxon: threat detection for Kubernetes audit logs.

This package is only the command-line shell (`klaxon ...`); the work lives in
`schemas`, `mitre`, `detections`, `pipeline` and `replay`.
"""

__version__ = "0.1.0"
