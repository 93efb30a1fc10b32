"""HTTP routes: health, models, classification (REST)."""
