"""The default CPU model (no torch): views.py -> neighbours.py -> level1.py -> trees.py / stack.py; parallel.py."""
