"""Datasets: image folders and the embedded offline "brainsim" data."""
