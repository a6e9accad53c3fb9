"""mitre package."""
