"""The HTTP surface: one controller module per resource, and the bodies they speak."""
