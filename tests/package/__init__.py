"""The package as shipped: sdist, wheel, installed copy, and settings from the environment."""
