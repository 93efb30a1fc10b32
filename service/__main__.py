"""`python -m service`: start the server with settings from S2D_* variables (and S2D_SETTINGS_FILE)."""

from service.server import serve

serve()
