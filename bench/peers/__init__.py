"""Peer quantizers for the rate-distortion study: each returns the reconstruction and its bits."""
