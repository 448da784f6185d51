"""Serving ``meteor build`` output: the bundle, its HTML, static files, hot code push."""
