"""atft: ATFT-GAT-FAN for multi-horizon stock returns, and the health suite that keeps it learning."""

__version__ = "0.1.0"
