"""Rhasspy Hermes: message shapes and the routes that speak them."""
