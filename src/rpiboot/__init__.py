"""rpiboot: boot Raspberry Pis over USB (a Python replacement for usbboot's rpiboot)."""

__version__ = "0.1.0"
