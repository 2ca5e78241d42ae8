"""The HTTP face: Flask routes for /predict, /models, /health, /v2 (REST), the page and OpenAPI."""
