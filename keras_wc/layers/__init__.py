"""Reparameterized Keras layers."""
