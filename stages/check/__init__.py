"""Checks of a machine: ``gpu`` runs every CUDA path once, briefly, on a lent GPU."""
