"""The demo shop (``python run.py --demo``) and the storefront page served at ``/demo``."""
