"""`python -m service`: start the server with settings from S2D_* variables (and S2D_SETTINGS_FILE)."""

from s2d.service.server import serve

serve()
