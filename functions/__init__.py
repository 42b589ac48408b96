"""Trigger adapters: one blueprint per trigger family. Each handler parses its input,
calls one function of `shared`, and returns."""
